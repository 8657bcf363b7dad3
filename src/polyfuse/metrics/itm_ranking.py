"""Image-text retrieval by ITM ranking, as an evaluation metric of the training loop (TR@K / IR@K).

Single-stream models (ViLT, Kim et al., 2021) retrieve by fusing a query with every candidate and
ranking the candidates by the image-text-matching score; ALBEF (Li et al., 2021) and BLIP (Li et al.,
2022) re-rank only the top ``k`` candidates of their contrastive (ITC) similarity. :class:`ITMRanking`
does either over a whole evaluation split, on every rank of a DDP run:

1. ``update`` keeps, per sample id, the encoder outputs of both sides (real tokens only, on the CPU),
   a content key per side (identical images / captions become one retrieval item: one-to-many ground
   truth, as COCO's five captions per image) and, for ``candidates``, the ITC embeddings;
2. ``compute`` gathers them from every rank by id (:func:`~polyfuse.metrics.distributed.gather_by_id`,
   each sample once, in id order), splits the query rows over the ranks, scores them with the
   ``scorer`` the head hands in (its fusion + ITM classifier on a batch of pairs), gathers the rows
   and ranks (:func:`~polyfuse.metrics.retrieval.retrieval_recall`'s rule: ties count against the query).

Outputs ``TR@k`` (``anchor`` query -> ``swap`` items, image -> text), ``IR@k`` (``swap`` query ->
``anchor`` items), ``itm_rsum``. Full ranking costs ``#anchors x #swaps`` fused pairs: use
``candidates`` on large splits (5k COCO test images x 25k captions).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from polyfuse.batch import Encoded
from polyfuse.metrics.collected import SplitMetric
from polyfuse.distributed import gather_from_ranks, rank_and_world
from polyfuse.metrics.distributed import gather_by_id
from polyfuse.metrics.retrieval import _ranks, _summary

__all__ = ["ITMRanking", "PairScorer"]

PairScorer = Callable[[dict[str, Encoded]], Tensor]
"""``{anchor: Encoded (P, La, D), swap: Encoded (P, Ls, D)} -> (P,)`` ITM logits of ``P`` pairs."""


def _stack(items: list[Tensor]) -> Encoded:
    """Right-padded ``(N, L_max, D)`` tokens + mask from ``N`` sequences of real tokens ``(L_i, D)``."""
    length = max(item.shape[0] for item in items)
    tokens = items[0].new_zeros(len(items), length, items[0].shape[-1])
    mask = torch.zeros(len(items), length, dtype=torch.bool)
    for row, item in enumerate(items):
        tokens[row, :item.shape[0]] = item
        mask[row, :item.shape[0]] = True
    return Encoded(tokens, mask)


def _take(encoded: Encoded, index: Tensor) -> Encoded:
    return Encoded(encoded.tokens[index], None if encoded.mask is None else encoded.mask[index])


class ITMRanking(SplitMetric):
    """Ranks every (or every top-``candidates``) anchor-swap pair of a split by ITM score (see module doc).

    ``update(ids, anchor, swap, anchor_keys, swap_keys, scorer, anchor_embedding=None, swap_embedding=None)``:
    ``anchor``/``swap``: the batch's :class:`Encoded` ``(B, L, D)`` of the two modalities; ``*_keys: (B,)``
    content keys (:func:`~polyfuse.metrics.retrieval.content_key` of the inputs); ``scorer``: the pair
    scorer (:data:`PairScorer`), kept for ``compute``; ``*_embedding: (B, E)`` ITC embeddings (needed
    with ``candidates``). Samples whose ``present`` flag is off on either side are skipped.

    Args:
        anchor, swap: modality names (ITM: ``image``, ``text``). ks: recall cut-offs.
        candidates: ``None``: score every pair (ViLT); ``k``: re-rank only the top ``k`` of the ITC
            similarity per query, the others rank below them (ALBEF / BLIP).
        chunk: pairs per fused forward pass.
    """

    higher_is_better = True

    def __init__(self, anchor: str = "image", swap: str = "text", ks: Sequence[int] = (1, 5, 10),
                 candidates: int | None = None, chunk: int = 256, **kwargs) -> None:
        super().__init__(**kwargs)
        if candidates is not None and candidates < 1:
            raise ValueError(f"ITMRanking candidates must be >= 1 or None, got {candidates}")
        self.anchor, self.swap, self.ks = anchor, swap, tuple(ks)
        self.candidates, self.chunk = candidates, int(chunk)
        self.samples: dict[str, dict[str, Tensor]] = {}
        self.scorer: PairScorer | None = None

    def update(self, ids: Sequence[str], anchor: Encoded, swap: Encoded, anchor_keys: Tensor, swap_keys: Tensor,
               scorer: PairScorer, anchor_embedding: Tensor | None = None,
               swap_embedding: Tensor | None = None) -> None:
        if self.candidates is not None and (anchor_embedding is None or swap_embedding is None):
            raise ValueError("ITMRanking(candidates=k) re-ranks the ITC top k: pass anchor_embedding and "
                             "swap_embedding (ITMHead(hard_negatives=True) computes them)")
        self.scorer = scorer
        cpu = lambda value: value.detach().float().cpu()  # noqa: E731  (one transfer per batch)
        valid = (anchor.present_or_full() & swap.present_or_full()).cpu()
        anchor_mask, swap_mask = anchor.mask_or_full().cpu(), swap.mask_or_full().cpu()
        anchor_tokens, swap_tokens = cpu(anchor.tokens), cpu(swap.tokens)
        keys = torch.stack([anchor_keys, swap_keys], dim=1).detach().cpu()
        embeddings = None
        if anchor_embedding is not None and swap_embedding is not None:
            embeddings = cpu(anchor_embedding), cpu(swap_embedding)
        for row, sample_id in enumerate(ids):
            if not bool(valid[row]):
                continue
            entry = {"anchor": anchor_tokens[row][anchor_mask[row]], "swap": swap_tokens[row][swap_mask[row]],
                     "keys": keys[row].clone()}  # clones: a pickled view would carry the whole batch
            if embeddings is not None:
                entry["anchor_embedding"] = embeddings[0][row].clone()
                entry["swap_embedding"] = embeddings[1][row].clone()
            self.samples[str(sample_id)] = entry

    def reset(self) -> None:
        super().reset()
        self.samples, self.scorer = {}, None

    def _score_rows(self, queries: Encoded, items: Encoded, rows: list[int], columns: list[Tensor] | None,
                    query_is_anchor: bool, device: torch.device) -> dict[int, Tensor]:
        """ITM logits of query ``r`` against every item (or ``columns[r]``), for ``r`` in ``rows``."""
        assert self.scorer is not None
        out: dict[int, Tensor] = {}
        for row in rows:
            candidates = torch.arange(items.tokens.shape[0]) if columns is None else columns[row]
            scores = []
            for start in range(0, len(candidates), self.chunk):
                index = candidates[start:start + self.chunk]
                query = _take(queries, torch.full((len(index),), row, dtype=torch.long))
                item = _take(items, index)
                anchor, swap = (query, item) if query_is_anchor else (item, query)
                pairs = {self.anchor: Encoded(anchor.tokens.to(device), anchor.mask.to(device)),
                         self.swap: Encoded(swap.tokens.to(device), swap.mask.to(device))}
                with torch.no_grad():
                    scores.append(self.scorer(pairs).detach().double().reshape(-1).cpu())
            out[row] = torch.cat(scores)
        return out

    def _matrix(self, queries: Encoded, items: Encoded, columns: list[Tensor] | None, query_is_anchor: bool,
                device: torch.device) -> Tensor:
        """``(#queries, #items)`` scores; query rows split over the ranks, gathered on every rank."""
        rank, size = rank_and_world()
        mine = self._score_rows(queries, items, list(range(rank, queries.tokens.shape[0], size)), columns,
                                query_is_anchor, device)
        matrix = torch.full((queries.tokens.shape[0], items.tokens.shape[0]), float("-inf"), dtype=torch.float64)
        for part in gather_from_ranks(mine):
            for row, scores in part.items():
                if columns is None:
                    matrix[row] = scores
                else:
                    matrix[row, columns[row]] = scores
        return matrix

    def compute(self) -> dict[str, float]:
        samples = gather_by_id(self.samples)
        if not samples:
            return {}
        if self.scorer is None:
            raise RuntimeError("ITMRanking has samples from other ranks but no scorer on this one: every rank "
                               "must evaluate at least one batch")
        device = self.device  # the module's device (torchmetrics moves metrics with it)
        keys = torch.stack([entry["keys"] for entry in samples.values()])          # (N, 2)
        anchor_keys, anchor_of = torch.unique(keys[:, 0], return_inverse=True)
        swap_keys, swap_of = torch.unique(keys[:, 1], return_inverse=True)
        entries = list(samples.values())
        first_anchor = [int((anchor_of == a).nonzero()[0]) for a in range(len(anchor_keys))]
        first_swap = [int((swap_of == s).nonzero()[0]) for s in range(len(swap_keys))]
        anchors = _stack([entries[i]["anchor"] for i in first_anchor])
        swaps = _stack([entries[i]["swap"] for i in first_swap])
        positive = torch.zeros(len(anchor_keys), len(swap_keys), dtype=torch.bool)
        positive[anchor_of, swap_of] = True
        if self.candidates is None:
            tr = self._matrix(anchors, swaps, None, True, device)
            ir = tr.T
        else:
            anchor_emb = F.normalize(torch.stack([entries[i]["anchor_embedding"] for i in first_anchor]), dim=-1)
            swap_emb = F.normalize(torch.stack([entries[i]["swap_embedding"] for i in first_swap]), dim=-1)
            similarity = anchor_emb @ swap_emb.T
            top_swaps = list(similarity.topk(min(self.candidates, similarity.shape[1]), dim=1).indices)
            top_anchors = list(similarity.T.topk(min(self.candidates, similarity.shape[0]), dim=1).indices)
            tr = self._matrix(anchors, swaps, top_swaps, True, device)
            ir = self._matrix(swaps, anchors, top_anchors, False, device)
        text = _summary(_ranks(tr, positive), self.ks, "TR")
        image = _summary(_ranks(ir, positive.T), self.ks, "IR")
        out = {f"TR@{k}": text[f"TR/R@{k}"] for k in self.ks}
        out.update({f"IR@{k}": image[f"IR/R@{k}"] for k in self.ks})
        out["itm_rsum"] = sum(out.values())
        return out

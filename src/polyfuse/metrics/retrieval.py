"""Cross-modal retrieval recall (R@K, mean / median rank) with one-to-one or one-to-many ground truth."""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from polyfuse.metrics.collected import SplitMetric

__all__ = ["retrieval_recall", "RetrievalRecall", "content_key", "id_key"]


def _ranks(scores: Tensor, positive: Tensor) -> Tensor:
    """0-based rank of each row's best positive: the number of negatives scoring at least as high.

    Ties count against the query, so a collapsed model (every score equal) gets R@1 = 0, not 100.
    """
    best_positive = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
    return ((scores >= best_positive) & ~positive).sum(dim=1)


def _summary(ranks: Tensor, ks: Sequence[int], prefix: str) -> dict[str, float]:
    out = {f"{prefix}/R@{k}": 100.0 * (ranks < k).double().mean().item() for k in ks}
    out[f"{prefix}/mean_rank"] = ranks.double().mean().item() + 1.0
    out[f"{prefix}/median_rank"] = float(torch.floor(ranks.double().median()).item()) + 1.0
    return out


def retrieval_recall(similarity: Tensor, ks: Sequence[int] = (1, 5, 10),
                     query_to_target: Tensor | Sequence[int] | None = None) -> dict[str, float]:
    """Recall at K in both directions, as retrieval papers report it (percent, 0-100).

    Args:
        similarity: ``(num_a, num_b)`` scores (higher = more similar).
        ks: the cut-offs K.
        query_to_target: ``(num_b,)``: the index of the ``a`` each ``b`` belongs to (COCO: ``a`` =
            5,000 images, ``b`` = 25,000 captions, five per image). ``None``: one-to-one, ``b_j``
            matches ``a_j`` (needs ``num_a == num_b``).

    Returns:
        ``a_to_b/R@k`` (an ``a`` query is a hit when *any* of its ``b`` is in the top K), ``b_to_a/R@k``
        (the single matching ``a`` in the top K), ``a_to_b/mean_rank``, ``a_to_b/median_rank`` (1-based
        rank of the first hit; the median as VSE++: ``floor(median) + 1``), the same for ``b_to_a``, and
        ``rsum``, the sum of every R@K of both directions. Ties count against the query.
    """
    if similarity.dim() != 2:
        raise ValueError(f"similarity must be (num_a, num_b), got shape {tuple(similarity.shape)}")
    num_a, num_b = similarity.shape
    if query_to_target is None:
        if num_a != num_b:
            raise ValueError(f"one-to-one retrieval needs a square similarity, got {num_a} x {num_b}; "
                             "pass query_to_target for one-to-many ground truth")
        owner = torch.arange(num_b, device=similarity.device)
    else:
        owner = torch.as_tensor(query_to_target, device=similarity.device).long()
        if owner.shape != (num_b,):
            raise ValueError(f"query_to_target must have one entry per b ({num_b}), got shape {tuple(owner.shape)}")
        if num_b and (owner.min() < 0 or owner.max() >= num_a):
            raise ValueError(f"query_to_target values must index the {num_a} a items")
    scores = similarity.detach().double()
    positive = owner[None, :] == torch.arange(num_a, device=similarity.device)[:, None]   # (num_a, num_b)
    has_positive = positive.any(dim=1)
    if not bool(has_positive.all()):
        raise ValueError(f"{int((~has_positive).sum())} a items have no matching b in query_to_target")
    a_to_b = _ranks(scores, positive)
    b_to_a = _ranks(scores.T, positive.T)
    out = {**_summary(a_to_b, ks, "a_to_b"), **_summary(b_to_a, ks, "b_to_a")}
    out["rsum"] = sum(out[f"{d}/R@{k}"] for d in ("a_to_b", "b_to_a") for k in ks)
    return out


def content_key(values: Tensor, mask: Tensor | None = None) -> Tensor:
    """``(B,)`` int64 keys equal exactly for samples with identical content (tokens, pixels, waveform).

    ``values: (B, ...)``; ``mask: (B, L)`` restricts each row to its real positions. Used to merge
    duplicated targets (the same caption text for several images) before scoring retrieval.
    """
    keys = []
    for row in range(values.shape[0]):
        item = values[row]
        if mask is not None:
            item = item[mask[row]]
        digest = hashlib.blake2b(item.detach().cpu().contiguous().numpy().tobytes(), digest_size=8).digest()
        keys.append(int.from_bytes(digest, "little", signed=True))
    return torch.tensor(keys, dtype=torch.long, device=values.device)


def id_key(ids: Sequence[str]) -> Tensor:
    """``(B,)`` int64 keys of sample ids, equal in every process (unlike Python's salted ``hash``)."""
    return torch.tensor([int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little", signed=True)
                         for i in ids], dtype=torch.long)


class RetrievalRecall(SplitMetric):
    """Accumulates paired embeddings over an evaluation split and scores retrieval between them.

    ``update(embeddings, present, keys)`` with ``embeddings: {modality: (B, D)}``, optional
    ``present: {modality: (B,)}`` and ``keys: {modality: (B,)}`` (from :func:`content_key`) for the
    modalities listed in ``dedupe``. For each pair ``(a, b)``, samples where both are present are
    scored with cosine similarity; if ``b`` is deduplicated, identical ``b`` items become one target
    and the ground truth is one-to-many (a caption shared by several images), see
    :func:`retrieval_recall`.

    Output keys: ``{a}_to_{b}/R@k``, ``{b}_to_{a}/R@k``, mean/median ranks, ``{a}_{b}/rsum`` per pair,
    and ``rsum`` (the sum over pairs). Embeddings are gathered across processes (``dist_reduce_fx="cat"``).
    With ``ids`` (the batch's sample ids) the gathered samples are put in one order, whatever the
    number of processes, and a sample seen twice (a padded sampler) counts once; the representative of
    a deduplicated item is then the same in a DDP run and in one process.

    Args:
        pairs: ``[(a, b), ...]`` modality pairs. ks: recall cut-offs. dedupe: modalities whose
            identical inputs are merged into one retrieval item (at most one per pair).
    """


    def __init__(self, pairs: Sequence[Sequence[str]], ks: Sequence[int] = (1, 5, 10),
                 dedupe: Sequence[str] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.pairs = [tuple(pair) for pair in pairs]
        for a, b in self.pairs:
            if a in dedupe and b in dedupe:
                raise ValueError(f"cannot dedupe both sides of the pair ({a}, {b}): many-to-many ground truth "
                                 "is not supported")
        self.ks, self.dedupe = tuple(ks), tuple(dedupe)
        self.modalities = sorted({m for pair in self.pairs for m in pair})
        for name in self.modalities:
            self.add_state(f"embeddings_{name}", default=[], dist_reduce_fx="cat")
            self.add_state(f"present_{name}", default=[], dist_reduce_fx="cat")
            if name in self.dedupe:
                self.add_state(f"keys_{name}", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: dict[str, Tensor], present: dict[str, Tensor] | None = None,
               keys: dict[str, Tensor] | None = None, ids: Sequence[str] | None = None) -> None:
        present, keys = present or {}, keys or {}
        if ids is not None:
            device = next(iter(embeddings.values())).device
            self.ids.append(id_key(ids).to(device))
        for name in self.modalities:
            if name not in embeddings:
                raise KeyError(f"RetrievalRecall needs embeddings for {name!r}; got {list(embeddings)}")
            emb = embeddings[name].detach()
            getattr(self, f"embeddings_{name}").append(emb)
            flags = present.get(name)
            getattr(self, f"present_{name}").append(
                torch.ones(emb.shape[0], dtype=torch.bool, device=emb.device) if flags is None else flags.bool())
            if name in self.dedupe:
                if name not in keys:
                    raise KeyError(f"RetrievalRecall dedupes {name!r} but got no content keys for it")
                getattr(self, f"keys_{name}").append(keys[name])

    def _state(self, kind: str, name: str) -> Tensor:
        value = getattr(self, f"{kind}_{name}" if name else kind)
        return torch.cat(value) if isinstance(value, list) else value

    def _order(self) -> Tensor | None:
        """Sample positions sorted by id key, each id once; ``None`` when no ids were given."""
        if isinstance(self.ids, list) and len(self.ids) == 0:
            return None
        keys = self._state("ids", "")
        if keys.numel() == 0:  # synced across processes, none of which had ids
            return None
        count = self._state("embeddings", self.modalities[0]).shape[0]
        if keys.shape[0] != count:
            raise ValueError(f"RetrievalRecall got ids for {keys.shape[0]} of {count} samples: "
                             "pass ids in every update")
        order = torch.sort(keys, stable=True).indices
        sorted_keys = keys[order]
        first = torch.ones_like(sorted_keys, dtype=torch.bool)
        first[1:] = sorted_keys[1:] != sorted_keys[:-1]
        return order[first]

    def compute(self) -> dict[str, float]:
        state = getattr(self, f"embeddings_{self.modalities[0]}")
        if len(state) == 0:  # a list before DDP sync, a concatenated tensor after it
            return {}
        order = self._order()

        def gathered(kind: str, name: str) -> Tensor:  # every process's samples, in id order when ids were given
            value = self._state(kind, name)
            return value if order is None else value[order.to(value.device)]

        out: dict[str, float] = {}
        total = 0.0
        for a, b in self.pairs:
            valid = gathered("present", a) & gathered("present", b)
            emb_a = F.normalize(gathered("embeddings", a)[valid].float(), dim=-1)
            emb_b = F.normalize(gathered("embeddings", b)[valid].float(), dim=-1)
            # orient so that the deduplicated side (if any) is the "a" side of retrieval_recall
            first, second, flipped = (b, a, True) if b in self.dedupe else (a, b, False)
            emb_first, emb_second = (emb_b, emb_a) if flipped else (emb_a, emb_b)
            owner = None
            if first in self.dedupe:
                keys = gathered("keys", first)[valid]
                unique, owner = torch.unique(keys, return_inverse=True)
                first_index = torch.full((unique.shape[0],), -1, dtype=torch.long, device=keys.device)
                first_index.scatter_reduce_(0, owner, torch.arange(keys.shape[0], device=keys.device),
                                            reduce="amin", include_self=False)
                emb_first = emb_first[first_index]
            scores = retrieval_recall(emb_first @ emb_second.T, self.ks, owner)
            names = {"a_to_b": f"{first}_to_{second}", "b_to_a": f"{second}_to_{first}"}
            for key, value in scores.items():
                direction, _, stat = key.partition("/")
                if direction in names:
                    out[f"{names[direction]}/{stat}"] = value
            out[f"{a}_{b}/rsum"] = scores["rsum"]
            total += scores["rsum"]
        out["rsum"] = total
        return out

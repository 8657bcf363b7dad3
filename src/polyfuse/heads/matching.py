"""Image-text matching (ITM) for single-stream models, with in-batch hard negatives."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy

from polyfuse.batch import Batch, Encoded
from polyfuse.fusion.base import FusionOutput
from polyfuse.heads.base import HEADS, HeadContext, LossOutput, TaskHead
from polyfuse.losses import ContrastiveLoss
from polyfuse.losses.masking import mask_rows, masked_mean
from polyfuse.metrics import content_key
from polyfuse.metrics.itm_ranking import ITMRanking


def swap_rows(encoded: Encoded, index: Tensor) -> Encoded:
    """The samples of ``encoded`` reordered by ``index: (B,)``."""
    pick = lambda value: None if value is None else value.index_select(0, index)  # noqa: E731
    return Encoded(encoded.tokens.index_select(0, index), pick(encoded.mask), pick(encoded.present))


@HEADS.register("itm")
class ITMHead(TaskHead):
    """Does this ``swap`` modality belong with the rest of the sample? A binary classifier on the
    fused [CLS]/pooled output, trained on the batch's real pairs and on mismatched ones.

    For every sample a negative is built by replacing its ``swap`` modality (text by default) with
    another sample's, and the pair is fused again with the model's own fusion (single-stream models
    such as ViLT, Kim et al., 2021, and VL-BERT-style pre-training). Negatives are:

    * ``hard_negatives=True``: drawn with probability ``softmax(sim / τ)`` over the batch, where
      ``sim`` is the cosine similarity of small contrastive embeddings of the two sides trained
      alongside with an InfoNCE loss (ITC) -- ALBEF's hard-negative mining (Li et al., 2021);
    * ``hard_negatives=False``: drawn uniformly (ViLT).

    A candidate whose ``swap`` input is identical to the anchor's (a duplicated caption) is never a
    negative. Samples whose ``swap`` or ``anchor`` modality is absent get no negative.

    Outputs ``logits (P + N,)`` and ``labels`` (1 = matched). Loss: binary cross-entropy (+ ITC
    weighted by ``itc_weight`` with hard negatives). Metric: ``itm_acc``; with ``ranking`` also retrieval
    by ITM ranking over the whole evaluation split (``TR@k``, ``IR@k``, ``itm_rsum``:
    :class:`~polyfuse.metrics.itm_ranking.ITMRanking`).

    Args:
        in_dim: fused width. dims: encoder widths. swap: the modality replaced in negatives.
        anchor: the modality it is matched against (for hard negatives; default: the other one).
        hard_negatives, embed_dim, temperature, itc_weight: see above.
        ranking: ``None`` or :class:`ITMRanking` options (``ks``, ``candidates``, ``chunk``) and
            ``stages`` (default ``[val, test]``): rank every ``anchor``-``swap`` pair of the split
            (ViLT), or the top ``candidates`` of the ITC similarity (ALBEF / BLIP; needs ``hard_negatives``).
    """

    monitor = "itm_acc"
    masks_invalid_rows = True  # placeholder rows: no positive pair, never a negative partner
    monitor_mode = "max"

    def __init__(self, in_dim: int, dims: Mapping[str, int] | None = None, *, swap: str = "text",
                 anchor: str | None = None, hard_negatives: bool = True, embed_dim: int = 64,
                 temperature: float = 0.07, itc_weight: float = 1.0, ranking: Mapping[str, Any] | None = None) -> None:
        super().__init__(in_dim, dims)
        if self.dims and swap not in self.dims:
            raise KeyError(f"ITMHead swaps modality {swap!r}, but the model has {list(self.dims)}")
        others = [m for m in self.dims if m != swap]
        self.swap, self.anchor = swap, anchor or (others[0] if others else None)
        self.hard_negatives, self.temperature, self.itc_weight = hard_negatives, temperature, itc_weight
        self.classifier = nn.Linear(in_dim, 1)
        self.ranking = None if ranking is None else dict(ranking)
        self.ranking_stages = tuple((self.ranking or {}).pop("stages", ("val", "test")))
        if self.ranking is not None:
            if self.anchor is None:
                raise ValueError(f"ITMHead ranking needs an anchor modality besides {swap!r}; dims: {list(self.dims)}")
            if self.ranking.get("candidates") is not None and not hard_negatives:
                raise ValueError("ITMHead ranking with candidates re-ranks the ITC top k: it needs hard_negatives=True")
        if hard_negatives:
            if self.anchor is None or self.anchor not in self.dims:
                raise ValueError(f"ITMHead hard negatives need an anchor modality besides {swap!r}; "
                                 f"dims: {list(self.dims)}")
            self.itc_projections = nn.ModuleDict({m: nn.Linear(self.dims[m], embed_dim, bias=False)
                                                  for m in (self.anchor, swap)})
            self.itc_loss = ContrastiveLoss()

    def _negative_partners(self, batch: Batch, valid: Tensor, similarity: Tensor | None) -> Tensor:
        """``(B,)`` index of the sample whose ``swap`` input each sample gets (``-1``: none)."""
        source = batch.inputs[self.swap]
        keys = content_key(source.values, source.mask)
        allowed = (keys[:, None] != keys[None, :]) & valid[None, :] & valid[:, None]
        if similarity is None:
            weights = allowed.float()
        else:
            weights = (similarity.detach() / self.temperature).softmax(dim=1) * allowed
        has_candidate = weights.sum(1) > 0
        partners = torch.full((weights.shape[0],), -1, dtype=torch.long, device=weights.device)
        if bool(has_candidate.any()):
            partners[has_candidate] = torch.multinomial(weights[has_candidate], 1).squeeze(1)
        return partners

    def score(self, fused: FusionOutput) -> Tensor:
        """``(B,)`` matching logit of each fused pair (HF ViLT's ``rank_output``)."""
        return self.classifier(fused.pooled).squeeze(-1)

    def forward(self, fused: FusionOutput, batch: Batch, context: HeadContext | None = None) -> dict[str, Any]:
        context = self.require(context, "encoded", "fuse")
        if self.swap not in context.encoded:
            raise KeyError(f"ITMHead swaps modality {self.swap!r}; encoded: {list(context.encoded)}")
        swap_encoded = context.encoded[self.swap]
        valid = swap_encoded.present_or_full()
        if batch.valid is not None:
            valid = valid & batch.valid.to(valid.device)
        outputs: dict[str, Any] = {"similarity": None}
        similarity = None
        if self.hard_negatives:
            anchor_encoded = context.encoded[self.anchor]
            valid = valid & anchor_encoded.present_or_full()
            anchor_emb = F.normalize(self.itc_projections[self.anchor](anchor_encoded.pooled()), dim=-1)
            swap_emb = F.normalize(self.itc_projections[self.swap](swap_encoded.pooled()), dim=-1)
            outputs.update(anchor_embedding=anchor_emb, swap_embedding=swap_emb, valid=valid)
            similarity = anchor_emb @ swap_emb.T
        partners = self._negative_partners(batch, valid, similarity)
        positive_logits = self.score(fused)
        has_negative = partners >= 0
        logits, labels = [positive_logits], [torch.ones_like(positive_logits)]
        keep = [batch.valid_or_full().to(positive_logits.device)]  # which logits are real pairs
        if bool(has_negative.any()):
            rows = torch.nonzero(has_negative).squeeze(1)
            negative = {name: swap_rows(enc, rows) for name, enc in context.encoded.items()}
            negative[self.swap] = swap_rows(swap_encoded, partners[rows])
            negative_logits = self.score(context.fuse(negative))
            logits.append(negative_logits)
            labels.append(torch.zeros_like(negative_logits))
            keep.append(torch.ones_like(negative_logits, dtype=torch.bool))
        outputs.update(logits=torch.cat(logits), labels=torch.cat(labels), keep=torch.cat(keep))
        if self.ranking is not None and not self.training:
            outputs["ranking"] = self._ranking_inputs(batch, context, outputs)
        return outputs

    def _ranking_inputs(self, batch: Batch, context: HeadContext, outputs: dict[str, Any]) -> dict[str, Any]:
        """What :class:`ITMRanking` keeps of this batch, and the pair scorer (fusion + classifier)."""
        anchor_input, swap_input = batch.inputs[self.anchor], batch.inputs[self.swap]
        fuse = context.fuse

        def scorer(pairs: dict[str, Encoded]) -> Tensor:
            return self.score(fuse(pairs))

        return {"ids": list(batch.ids), "anchor": context.encoded[self.anchor], "swap": context.encoded[self.swap],
                "anchor_keys": content_key(anchor_input.values, anchor_input.mask),
                "swap_keys": content_key(swap_input.values, swap_input.mask), "scorer": scorer,
                "anchor_embedding": outputs.get("anchor_embedding"), "swap_embedding": outputs.get("swap_embedding")}

    def loss(self, outputs: dict[str, Any], batch: Batch) -> LossOutput:
        keep = outputs["keep"]
        itm = masked_mean(F.binary_cross_entropy_with_logits(mask_rows(outputs["logits"], keep), outputs["labels"],
                                                             reduction="none"), keep)
        if not self.hard_negatives or self.itc_weight == 0:
            return itm
        valid = outputs["valid"]
        itc = self.itc_loss(outputs["anchor_embedding"], outputs["swap_embedding"], 1.0 / self.temperature,
                            valid=None if bool(valid.all()) else valid)
        return {"loss": itm + self.itc_weight * itc, "itm_loss": itm, "itc_loss": itc}

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        metrics: dict[str, Any] = {"itm_acc": BinaryAccuracy()}
        if self.ranking is not None and stage in self.ranking_stages:
            metrics["itm_ranking"] = ITMRanking(self.anchor, self.swap, **self.ranking)
        return MetricCollection(metrics)

    def update_metrics(self, metrics: MetricCollection, outputs: dict[str, Any], batch: Batch) -> None:
        keep = outputs["keep"]
        for metric in metrics.values(copy_state=False):
            if isinstance(metric, ITMRanking):
                if "ranking" in outputs:
                    metric.update(**outputs["ranking"])
            else:
                metric.update(outputs["logits"].detach()[keep].sigmoid(), outputs["labels"][keep].long())

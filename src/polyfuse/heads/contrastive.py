"""Dual-stream contrastive head: per-modality projection, normalisation, learnable temperature."""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection

from polyfuse.batch import Batch, Encoded, ModalityInput
from polyfuse.fusion.base import FusionOutput
from polyfuse.heads.base import HEADS, HeadContext, LossOutput, TaskHead
from polyfuse.losses import ContrastiveLoss, SigLipLoss
from polyfuse.metrics import RetrievalRecall, content_key

Pooling = Literal["mean", "first"]


@HEADS.register("contrastive")
class ContrastiveHead(TaskHead):
    """CLIP-style retrieval head over the encoders' outputs (no fusion needed).

    Each modality is pooled (masked mean, or its first token such as [CLS]), linearly projected to
    ``embed_dim`` and L2-normalised. The loss sums, over the modality ``pairs``, either the
    symmetric InfoNCE loss with a learnable temperature (CLIP, Radford et al., 2021; ``loss="clip"``,
    scale initialised to ``1 / 0.07`` and clamped at 100) or the sigmoid loss with learnable scale
    and bias (SigLIP, Zhai et al., 2023; ``loss="siglip"``, initialised to 10 and -10). Three
    modalities give the multi-pair sum (image-text + audio-image + audio-text, as ImageBind-style
    training does). One scale (and bias) is shared by all pairs.

    Missing modalities: a pair's loss only uses samples where both modalities are present; so do
    the retrieval metrics. Placeholder rows (``batch.valid``) are neither positives nor negatives
    on any rank.

    Metrics: :class:`~polyfuse.metrics.RetrievalRecall` per pair over the whole evaluation split
    (``{a}_to_{b}/R@k``, ..., ``rsum``). Modalities in ``dedupe`` merge identical inputs into one
    retrieval target (AV-digits captions are shared by several images: one-to-many ground truth).

    Args:
        in_dim: fused width (unused; may be ``None``). dims: modality -> encoder width.
        modalities: the modalities to embed (default: all of ``dims``). pairs: the pairs to contrast
            (default: every pair of ``modalities``). embed_dim: shared embedding width.
        pool: ``"mean"`` or ``"first"``. loss: ``"clip"`` or ``"siglip"``.
        projection: ``False`` uses the encodings as they are (no head projection; every modality's
            encoder must already embed to one width, ``embed_dim`` is then ignored): CLIP towers that
            carry their own projections (:class:`~polyfuse.models.CLIP`, open_clip checkpoints).
        init_temperature, learn_temperature, max_logit_scale: CLIP temperature settings.
        local_loss, gather_with_grad: distributed options of :class:`~polyfuse.losses.ContrastiveLoss`.
        siglip_exchange: ``"gather"`` or ``"ring"`` (SigLIP's chunked loss across ranks), see
            :class:`~polyfuse.losses.SigLipLoss`.
        ks: recall cut-offs. dedupe: modalities whose identical inputs are merged for the metrics.
        sources: modality -> name of a token-id target to embed *instead of* the batch input, with
            that modality's encoder (e.g. ``{"text": "caption_ids"}`` when the text input holds VQA
            questions in a multi-task model). source_pad_id: padding id of those targets.
    """

    monitor = "rsum"
    monitor_mode = "max"
    needs_fusion = False
    masks_invalid_rows = True

    def __init__(self, in_dim: int | None = None, dims: Mapping[str, int] | None = None, *,
                 modalities: Sequence[str] | None = None, pairs: Sequence[Sequence[str]] | None = None,
                 embed_dim: int = 64, pool: Pooling = "mean", projection: bool = True,
                 loss: Literal["clip", "siglip"] = "clip",
                 init_temperature: float = 0.07, learn_temperature: bool = True, max_logit_scale: float = 100.0,
                 local_loss: bool = False, gather_with_grad: bool = True, ks: Sequence[int] = (1, 5, 10),
                 dedupe: Sequence[str] = (), sources: Mapping[str, str] | None = None,
                 source_pad_id: int = 0, siglip_exchange: Literal["gather", "ring"] = "gather") -> None:
        super().__init__(in_dim, dims)
        modalities = list(self.dims) if modalities is None else list(modalities)
        unknown = [m for m in modalities if m not in self.dims]
        if unknown:
            raise KeyError(f"ContrastiveHead: no encoder width for modalities {unknown}; "
                           f"the model has {list(self.dims)}")
        self.pairs = [tuple(p) for p in pairs] if pairs is not None else list(itertools.combinations(modalities, 2))
        if not self.pairs:
            raise ValueError(f"ContrastiveHead needs at least two modalities to contrast, got {modalities}")
        for pair in self.pairs:
            if len(pair) != 2 or any(m not in modalities for m in pair):
                raise ValueError(f"ContrastiveHead pair {pair} must name two of {modalities}")
        if pool not in ("mean", "first"):
            raise ValueError(f"pool must be 'mean' or 'first', got {pool!r}")
        if loss not in ("clip", "siglip"):
            raise ValueError(f"loss must be 'clip' or 'siglip', got {loss!r}")
        self.modalities, self.pool, self.loss_kind = modalities, pool, loss
        self.ks, self.dedupe = tuple(ks), tuple(dedupe)
        self.sources, self.source_pad_id = dict(sources or {}), source_pad_id
        if not projection and len({self.dims[m] for m in modalities}) > 1:
            raise ValueError(f"ContrastiveHead(projection=False) needs encoders of one output width, got "
                             f"{ {m: self.dims[m] for m in modalities} }")
        self.projections = nn.ModuleDict({m: nn.Linear(self.dims[m], embed_dim, bias=False) if projection
                                          else nn.Identity() for m in modalities})
        if loss == "clip":
            self.loss_fn: nn.Module = ContrastiveLoss(local_loss=local_loss, gather_with_grad=gather_with_grad)
            init_scale, init_bias = math.log(1.0 / init_temperature), None
        else:
            self.loss_fn = SigLipLoss(exchange=siglip_exchange)
            init_scale, init_bias = math.log(10.0), -10.0
        self.logit_scale = nn.Parameter(torch.tensor(init_scale), requires_grad=learn_temperature)
        self.logit_bias = None if init_bias is None else nn.Parameter(torch.tensor(init_bias))
        self.max_log_scale = math.log(max_logit_scale)

    def _source_input(self, modality: str, batch: Batch) -> ModalityInput:
        name = self.sources[modality]
        if name not in batch.targets:
            raise KeyError(f"ContrastiveHead embeds target {name!r} as {modality!r}, but the batch has "
                           f"targets {list(batch.targets)}")
        ids = batch.targets[name]
        return ModalityInput(ids, mask=ids != self.source_pad_id)

    def _encoded(self, modality: str, batch: Batch, context: HeadContext) -> Encoded:
        if modality in self.sources:
            encode = self.require(context, "encode_modality").encode_modality
            return encode(modality, self._source_input(modality, batch))
        if modality not in context.encoded:
            raise KeyError(f"ContrastiveHead needs modality {modality!r}; encoded: {list(context.encoded)}")
        return context.encoded[modality]

    def embed(self, encoded: Encoded, modality: str) -> Tensor:
        """``(B, embed_dim)`` normalised embedding of one modality."""
        pooled = encoded.pooled() if self.pool == "mean" else encoded.tokens[:, 0]
        return F.normalize(self.projections[modality](pooled), dim=-1)

    def forward(self, fused: FusionOutput | None, batch: Batch, context: HeadContext | None = None) -> dict[str, Any]:
        context = self.require(context, "encoded")
        embeddings, present = {}, {}
        for m in self.modalities:
            encoded = self._encoded(m, batch, context)
            embeddings[m] = self.embed(encoded, m)
            present[m] = encoded.present_or_full()
        # 0-d outputs even where FSDP holds the scalars as (1,) (training/sharding.py): per-batch constants,
        # not per-sample values (the grad cache tells them apart by their shape)
        bias = None if self.logit_bias is None else self.logit_bias.reshape(())
        return {"embeddings": embeddings, "present": present,
                "logit_scale": self.logit_scale.clamp(max=self.max_log_scale).exp().reshape(()), "logit_bias": bias}

    def loss(self, outputs: dict[str, Any], batch: Batch) -> LossOutput:
        terms = {}
        for a, b in self.pairs:
            valid = outputs["present"][a] & outputs["present"][b]
            if batch.valid is not None:
                valid = valid & batch.valid.to(valid.device)
            valid_or_none = None if bool(valid.all()) else valid
            emb_a, emb_b = outputs["embeddings"][a], outputs["embeddings"][b]
            if self.loss_kind == "clip":
                terms[f"{a}_{b}/loss"] = self.loss_fn(emb_a, emb_b, outputs["logit_scale"], valid=valid_or_none)
            else:
                terms[f"{a}_{b}/loss"] = self.loss_fn(emb_a, emb_b, outputs["logit_scale"], outputs["logit_bias"],
                                                      valid=valid_or_none)
        total = sum(terms.values())
        if len(terms) == 1:
            return total  # type: ignore[return-value]
        return {"loss": total, **terms}  # type: ignore[dict-item]

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        if stage == "train":  # recall over the training set is neither cheap nor meaningful under augmentation
            return MetricCollection({})
        return MetricCollection({"retrieval": RetrievalRecall(self.pairs, self.ks, self.dedupe)})

    def update_metrics(self, metrics: MetricCollection, outputs: dict[str, Any], batch: Batch) -> None:
        if "retrieval" not in metrics.keys(keep_base=True):
            return
        keys = {}
        for m in self.dedupe:
            source = self._source_input(m, batch) if m in self.sources else batch.inputs[m]
            keys[m] = content_key(source.values, source.mask)
        metrics["retrieval"].update(outputs["embeddings"], outputs["present"], keys, ids=batch.ids)

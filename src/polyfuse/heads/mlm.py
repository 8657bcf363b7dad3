"""Masked language modelling over the fused tokens of a single-stream model."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from polyfuse.batch import Batch, Encoded
from polyfuse.fusion.base import FusionOutput
from polyfuse.heads.base import HEADS, HeadContext, TaskHead

IGNORE = -100


def mask_tokens(ids: Tensor, maskable: Tensor, vocab_size: int, mask_token_id: int, mask_prob: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """BERT's corruption (Devlin et al., 2019): pick ``mask_prob`` of the maskable tokens; of those,
    80% become ``[MASK]``, 10% a random token, 10% stay.

    Returns ``(corrupted ids, labels)`` with ``labels = -100`` where nothing is predicted. At least one
    token is picked in every row that has a maskable token.
    """
    draws = torch.rand(ids.shape, generator=generator, device=ids.device)
    picked = (draws < mask_prob) & maskable
    # guarantee a prediction per row: the maskable token with the smallest draw
    lowest = draws.masked_fill(~maskable, 2.0).argmin(dim=1, keepdim=True)
    force = torch.zeros_like(picked).scatter_(1, lowest, True) & maskable
    picked = picked | (force & ~picked.any(dim=1, keepdim=True))
    labels = ids.masked_fill(~picked, IGNORE)
    kind = torch.rand(ids.shape, generator=generator, device=ids.device)
    corrupted = ids.masked_fill(picked & (kind < 0.8), mask_token_id)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator, device=ids.device)
    replace_random = picked & (kind >= 0.8) & (kind < 0.9)
    corrupted = torch.where(replace_random, random_ids, corrupted)
    return corrupted, labels


@HEADS.register("mlm")
class MLMHead(TaskHead):
    """Predict masked text tokens from the fused sequence (ViLT / VL-BERT pre-training).

    Each forward pass corrupts the ``modality`` token ids (:func:`mask_tokens`, never the special
    ids), re-encodes the batch with the model's encoders, fuses it with the model's fusion and
    predicts the original ids at the masked positions from the fused tokens of that modality with
    BERT's prediction head (dense + GELU + LayerNorm + vocabulary decoder).

    Locating the text in the fused sequence: a fusion that reports ``segments`` (modality -> slice)
    on its output is used as is. Otherwise the single-stream layout is assumed: ``prefix_tokens``
    (e.g. [CLS]), then for each modality in the fusion's order its ``L_m`` tokens followed by
    ``suffix_tokens`` (``EarlyFusion``: ``prefix_tokens=1``, ``suffix_tokens=1`` for its [MISS]
    token). The total length is checked.

    Missing modalities: samples whose text is absent predict nothing. Metric: ``mlm_acc``.

    Args:
        in_dim: fused width. dims: encoder widths. vocab_size: text vocabulary.
        mask_token_id, special_token_ids: the [MASK] id and ids never masked (PAD, CLS, SEP, ...).
        modality: the text modality. mask_prob: fraction of tokens to predict.
    """

    monitor = "mlm_acc"
    monitor_mode = "max"

    def __init__(self, in_dim: int, dims: Mapping[str, int] | None = None, *, vocab_size: int,
                 mask_token_id: int, special_token_ids: Sequence[int] = (0, 1, 2, 3, 4), modality: str = "text",
                 mask_prob: float = 0.15, prefix_tokens: int = 1, suffix_tokens: int = 1) -> None:
        super().__init__(in_dim, dims)
        self.vocab_size, self.mask_token_id, self.modality = vocab_size, mask_token_id, modality
        self.mask_prob, self.prefix_tokens, self.suffix_tokens = mask_prob, prefix_tokens, suffix_tokens
        self.register_buffer("special_ids", torch.tensor(sorted(set(special_token_ids)), dtype=torch.long),
                             persistent=False)
        self.transform = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.LayerNorm(in_dim))
        self.decoder = nn.Linear(in_dim, vocab_size)

    def text_tokens(self, fused: FusionOutput, encoded: dict[str, Encoded]) -> Tensor:
        """The fused tokens at the text positions, ``(B, L_text, D)``."""
        if fused.tokens is None:
            raise ValueError("MLMHead needs a token-level single-stream fusion (FusionOutput.tokens is None)")
        segments = getattr(fused, "segments", None)
        if segments:
            return fused.tokens[:, segments[self.modality]]
        offset, start = self.prefix_tokens, None
        for name, enc in encoded.items():
            if name == self.modality:
                start = offset
            offset += enc.tokens.shape[1] + self.suffix_tokens
        if start is None:
            raise KeyError(f"MLMHead: modality {self.modality!r} is not among the fused {list(encoded)}")
        if offset != fused.tokens.shape[1]:
            raise ValueError(f"MLMHead cannot locate {self.modality!r} in the fused sequence: expected "
                             f"{offset} tokens (prefix_tokens={self.prefix_tokens}, "
                             f"suffix_tokens={self.suffix_tokens}, "
                             f"lengths {[e.tokens.shape[1] for e in encoded.values()]}), got {fused.tokens.shape[1]}")
        return fused.tokens[:, start:start + encoded[self.modality].tokens.shape[1]]

    def forward(self, fused: FusionOutput, batch: Batch, context: HeadContext | None = None) -> dict[str, Any]:
        context = self.require(context, "encode", "fuse")
        if self.modality not in batch.inputs:
            raise KeyError(f"MLMHead masks modality {self.modality!r}; batch has {batch.modalities}")
        text = batch.inputs[self.modality]
        real = text.mask if text.mask is not None else torch.ones_like(text.values, dtype=torch.bool)
        maskable = real & text.present_or_full()[:, None] & ~torch.isin(text.values, self.special_ids)
        corrupted, labels = mask_tokens(text.values, maskable, self.vocab_size, self.mask_token_id, self.mask_prob)
        masked_batch = Batch({**batch.inputs, self.modality: replace(text, values=corrupted)}, batch.targets,
                             batch.ids, batch.extras)
        encoded = context.encode(masked_batch)
        tokens = self.text_tokens(context.fuse(encoded), encoded)
        return {"logits": self.decoder(self.transform(tokens)), "labels": labels}

    def loss(self, outputs: dict[str, Any], batch: Batch) -> Tensor:
        logits, labels = outputs["logits"], outputs["labels"]
        if not bool((labels != IGNORE).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        return MetricCollection({"mlm_acc": MulticlassAccuracy(self.vocab_size, average="micro", ignore_index=IGNORE)})

    def update_metrics(self, metrics: MetricCollection, outputs: dict[str, Any], batch: Batch) -> None:
        metrics.update(outputs["logits"].detach().flatten(0, 1), outputs["labels"].flatten())

"""Soft-target binary cross-entropy over an answer vocabulary (VQA as multi-label classification)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from polyfuse.losses.masking import mask_rows, masked_mean

__all__ = ["vqa_soft_bce"]


def vqa_soft_bce(logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> Tensor:
    """``BCEWithLogits(logits, targets) * num_answers``, averaged over questions.

    ``logits, targets: (B, A)``; ``targets`` are soft scores in ``[0, 1]`` (see
    :func:`polyfuse.heads.vqa.soft_scores`). Multiplying the element mean by ``A`` sums over the
    vocabulary, as Bottom-Up Top-Down (Anderson et al., 2018; Teney et al., 2018) and ViLT
    (Kim et al., 2021) do. ``valid: (B,)`` bool leaves placeholder rows out of the mean
    (:func:`~polyfuse.losses.masking.masked_mean`).
    """
    if logits.shape != targets.shape:
        raise ValueError(f"vqa_soft_bce: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    logits, targets = mask_rows(logits, valid), mask_rows(targets.to(logits.dtype), valid)
    per_question = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)
    return masked_mean(per_question, valid)

"""The missing-modality strategies shared by the fusions, as small tensor functions.

Every function takes the sanitised inputs of :meth:`Fusion.prepare` (``mask`` = valid mask,
``present`` materialised) and never reads a value at a position or sample that is not valid: they
follow the masking rule of :mod:`polyfuse.masking` (``torch.where``, never garbage times zero), whose
:func:`~polyfuse.masking.masked_mean` and :func:`~polyfuse.masking.zero_invalid` the fusions import
from here too.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polyfuse.masking import masked_mean, zero_invalid

__all__ = ["masked_mean", "fill_absent", "present_mean", "substitute_missing_token", "zero_invalid"]


def fill_absent(vectors: Tensor, present: Tensor, fill: Tensor) -> Tensor:
    """``vectors (B, D)`` where ``present (B,)``, else the (learned) ``fill (D,)`` vector."""
    return torch.where(present[:, None], vectors, fill.to(vectors.dtype).expand_as(vectors))


def present_mean(stacked: Tensor, present: Tensor, logits: Tensor | None = None) -> Tensor:
    """Renormalised average over the present modalities.

    Args:
        stacked: ``(B, M, ...)`` one entry per modality.
        present: ``(B, M)`` bool.
        logits: optional weights before a softmax over the *present* modalities, ``(M,)``,
            ``(B, M)`` or shaped like ``stacked`` (element-wise gates); uniform when ``None``.

    Returns:
        ``(B, ...)``; zeros for a sample with no present modality.
    """
    extra = [1] * (stacked.dim() - 2)
    mask = present.reshape(*present.shape, *extra)
    if logits is None:
        logits = stacked.new_zeros(present.shape)
    if logits.dim() == 1:
        logits = logits.expand(present.shape)
    if logits.dim() == 2:
        logits = logits.reshape(*logits.shape, *extra)
    logits = logits.to(stacked.dtype).expand_as(stacked).masked_fill(~mask, float("-inf"))
    any_present = mask.any(dim=1, keepdim=True)
    weights = torch.softmax(torch.where(any_present, logits, torch.zeros_like(logits)), dim=1)
    weights = zero_invalid(weights, mask)
    return (weights * zero_invalid(stacked, present)).sum(1)


def substitute_missing_token(tokens: Tensor, mask: Tensor, present: Tensor, token: Tensor) -> tuple[Tensor, Tensor]:
    """Give every absent sample one learned [MISSING] token.

    For samples with ``present=False`` the first position becomes ``token (D,)`` (valid) and all
    others are masked; present samples are unchanged. Used by fusions whose queries come from a
    modality that can be absent, so a query always exists and reads the other modalities.

    Returns ``(tokens (B, L, D), mask (B, L))``.
    """
    first = torch.zeros_like(mask)
    first[:, 0] = True
    absent = ~present[:, None]
    new_mask = torch.where(absent, first, mask)
    slot = (absent & first)[..., None]
    return torch.where(slot, token.to(tokens.dtype).expand_as(tokens), tokens), new_mask

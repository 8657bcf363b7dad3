"""The one masking rule of polyfuse: what is not valid is *selected away*, never multiplied by zero.

A padded position, an absent modality or a placeholder row may hold anything (``nan``, ``inf``, a
stale value). ``x * 0`` is ``nan`` for ``x = nan`` or ``inf``, in the forward and in the gradient, so a
mask that multiplies lets such garbage leak into every sum it takes part in. Every function here uses
:func:`torch.where` instead: the result, and the gradient reaching the masked entries, are exact zeros
whatever those entries hold. Every module of polyfuse (batch, encoders, fusions, losses) masks
through these functions.

Masks are ``bool``, ``True`` = valid, and shaped like the leading dimensions of the values they mask
(a dimension of size 1 broadcasts): ``(B,)`` for rows (a sample's presence, a batch row's validity),
``(B, L)`` for positions.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["broadcast_mask", "zero_invalid", "masked_mean"]


def broadcast_mask(mask: Tensor, values: Tensor) -> Tensor:
    """``mask`` (the leading dimensions of ``values``, each equal or 1) with trailing singleton
    dimensions added, on ``values``' device."""
    leading = tuple(values.shape[: mask.dim()])
    if mask.dim() > values.dim() or any(m not in (1, v) for m, v in zip(mask.shape, leading)):
        raise ValueError(f"mask {tuple(mask.shape)} does not match the leading dimensions of values "
                         f"{tuple(values.shape)}")
    return mask.to(values.device).reshape(tuple(mask.shape) + (1,) * (values.dim() - mask.dim()))


def zero_invalid(values: Tensor, mask: Tensor | None) -> Tensor:
    """``values (B, ...)`` with exact zeros where ``mask`` (``(B,)`` or ``(B, L)``) is ``False``.

    ``mask=None`` (everything valid) returns ``values`` itself. Works for any dtype (token ids too).
    """
    if mask is None:
        return values
    return torch.where(broadcast_mask(mask, values), values, torch.zeros((), dtype=values.dtype, device=values.device))


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values (B, L, ...)`` over the positions ``L`` where ``mask (B, L)`` is ``True`` -> ``(B, ...)``.

    A sample without a valid position gives zeros; ``mask=None`` is the plain mean over ``L``.
    """
    if mask is None:
        return values.mean(dim=1)
    count = broadcast_mask(mask, values).sum(dim=1).clamp_min(1).to(values.dtype)
    return zero_invalid(values, mask).sum(dim=1) / count

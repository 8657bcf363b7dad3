"""Key padding, key lengths and causal structure as the boolean masks the backends consume.

Conventions (shared by every backend): ``key_padding_mask (B, Lk)`` bool, ``True`` = real key;
``key_lengths (B,)`` int = number of real keys, stored first; causal query ``i`` sees keys
``j <= i + (Lk - Lq)`` (aligned to the end, as with a KV cache).
"""

from __future__ import annotations

import torch
from torch import Tensor


def lengths_to_padding_mask(key_lengths: Tensor, lk: int) -> Tensor:
    """``(B,)`` lengths -> ``(B, Lk)`` bool mask, ``True`` for the first ``length`` keys."""
    return torch.arange(lk, device=key_lengths.device)[None, :] < key_lengths.to(torch.long)[:, None]


def causal_mask(lq: int, lk: int, device: torch.device) -> Tensor:
    """``(Lq, Lk)`` bool, ``True`` where query ``i`` may see key ``j`` (``j <= i + Lk - Lq``)."""
    return torch.ones(lq, lk, dtype=torch.bool, device=device).tril(diagonal=lk - lq)


def allowed_mask(key_padding_mask: Tensor | None, lq: int, lk: int, *, causal: bool,
                 device: torch.device) -> Tensor | None:
    """Combined mask broadcastable to ``(B, H, Lq, Lk)``, or ``None`` when everything is allowed.

    Shapes: padding only ``(B, 1, 1, Lk)``; causal only ``(Lq, Lk)``; both ``(B, 1, Lq, Lk)``.
    """
    allowed = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    if causal:
        tri = causal_mask(lq, lk, device)
        allowed = tri if allowed is None else allowed & tri
    return allowed


def validate_inputs(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None,
                    key_lengths: Tensor | None) -> None:
    """Raise with the offending shape when q/k/v/mask do not fit ``(B, H, L, D)`` conventions."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention expects q, k, v as (B, H, L, D); got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: expected shared (B, H), "
                         "equal q/k head dims and equal k/v lengths")
    batch, lk = q.shape[0], k.shape[2]
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"key_padding_mask must be bool (True = real key), got {key_padding_mask.dtype}")
        if tuple(key_padding_mask.shape) != (batch, lk):
            raise ValueError(f"key_padding_mask must be (B, Lk) = ({batch}, {lk}), got {tuple(key_padding_mask.shape)}")
    if key_lengths is not None:
        if key_padding_mask is not None:
            raise ValueError("pass key_padding_mask or key_lengths, not both")
        if tuple(key_lengths.shape) != (batch,) or key_lengths.is_floating_point():
            raise ValueError(f"key_lengths must be (B,) = ({batch},) integers, got {tuple(key_lengths.shape)} "
                             f"{key_lengths.dtype}")

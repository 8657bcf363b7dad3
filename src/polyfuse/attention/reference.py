"""Plain PyTorch attention: the oracle every other backend is tested against."""

from __future__ import annotations

import torch
from torch import Tensor


def reference_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None = None,
    *,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Softmax attention computed explicitly, in fp32.

    Args:
        q: ``(B, H, Lq, D)``; k, v: ``(B, H, Lk, D)``.
        key_padding_mask: ``(B, Lk)`` bool, ``True`` = real key.
        causal: query ``i`` sees keys ``j <= i + (Lk - Lq)`` (aligned to the end, as in SDPA with
            a KV cache).

    Returns:
        ``(out (B, H, Lq, D), probs (B, H, Lq, Lk))``. Query rows without any allowed key give zero
        output and all-zero probabilities (never NaN).
    """
    # fp32 throughout, also under autocast (which would otherwise run the matmuls in bf16/fp16 again)
    with torch.autocast(device_type=q.device.type, enabled=False):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
        allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device)
        if causal:
            lq, lk = scores.shape[-2:]
            allowed = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)
        allowed = allowed.expand(scores.shape)
        if key_padding_mask is not None:
            allowed = allowed & key_padding_mask[:, None, None, :]
        scores = scores.masked_fill(~allowed, float("-inf"))
        row_has_key = allowed.any(-1, keepdim=True)
        scores = torch.where(row_has_key, scores, torch.zeros_like(scores))
        probs = torch.softmax(scores, dim=-1) * row_has_key
        attn = probs
        if dropout_p > 0.0:
            attn = torch.nn.functional.dropout(probs, p=dropout_p)
        out = torch.matmul(attn, v.float())
        return out.to(q.dtype), probs.to(q.dtype)

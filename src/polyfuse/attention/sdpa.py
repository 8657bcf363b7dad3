"""torch.nn.functional.scaled_dot_product_attention with the padding mask in the form it accepts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sdpa_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None = None,
    *,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """SDPA with a boolean ``(B, 1, Lq|1, Lk)`` mask; fully masked rows are zeroed (SDPA gives NaN)."""
    lq, lk = q.shape[-2], k.shape[-2]
    if key_padding_mask is None and (not causal or lq == lk):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale)
    allowed = None
    if key_padding_mask is not None:
        allowed = key_padding_mask[:, None, None, :]
    if causal:
        tri = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)
        allowed = tri if allowed is None else allowed & tri
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=scale)
    row_has_key = allowed.any(-1, keepdim=True)
    if not bool(row_has_key.all()):
        out = torch.where(row_has_key, out, torch.zeros((), dtype=out.dtype, device=out.device))
    return out

"""torch.nn.functional.scaled_dot_product_attention with the padding mask in the form it accepts.

SDPA's backends differ in what mask they take: flash takes none (only ``is_causal`` with
``Lq == Lk``), memory-efficient and cuDNN take a boolean/additive mask, math takes anything. We pass
no mask when there is none (so flash stays eligible) and a boolean ``(B, 1, Lq|1, Lk)`` mask
otherwise; ``sdpa_backends`` pins a subset (the benchmark uses it to time each backend).

Fully masked rows: some SDPA backends return NaN for them. On CUDA (no host sync allowed) those rows
are given all keys and their output is multiplied by zero, so forward and gradients are exactly
zero; on CPU the mask is checked once and the guard is only added when such a row exists.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from polyfuse.attention.args import AttentionArgs


def sdpa_attention(args: AttentionArgs, sdpa_backends: Sequence[SDPBackend] | None = None) -> Tensor:
    """``(B, H, Lq, D)`` for ``args`` (see :class:`AttentionArgs`).

    Query rows with no allowed key give zeros (never NaN) and zero gradients.
    """
    scope = sdpa_kernel(list(sdpa_backends)) if sdpa_backends else contextlib.nullcontext()
    q, k, v, dropout_p, scale = args.q, args.k, args.v, args.dropout_p, args.scale
    with scope:
        if not args.has_mask and (not args.causal or q.shape[-2] == k.shape[-2]):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=args.causal, scale=scale)
        allowed = args.allowed()
        row_has_key = allowed.any(-1, keepdim=True)
        if q.device.type == "cpu" and bool(row_has_key.all()):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=scale)
        safe = allowed | ~row_has_key
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe, dropout_p=dropout_p, scale=scale)
        # row_has_key broadcasts to (B, H, Lq, 1): (Lq, 1) when causal without padding (Lq > Lk)
        return torch.where(row_has_key, out, out.new_zeros(()))


def sdpa_backend_names() -> dict[str, SDPBackend]:
    """The SDPA backends by short name (``flash``, ``efficient``, ``cudnn``, ``math``)."""
    return {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}

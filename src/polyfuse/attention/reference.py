"""Plain PyTorch attention: the oracle every other backend is tested against."""

from __future__ import annotations

import torch
from torch import Tensor

from polyfuse.attention.args import AttentionArgs
from polyfuse.masking import zero_invalid


def reference_attention(args: AttentionArgs) -> tuple[Tensor, Tensor]:
    """Softmax attention computed explicitly, in fp32 (``args``: see :class:`AttentionArgs`).

    Returns:
        ``(out (B, H, Lq, D), probs (B, H, Lq, Lk))``. Query rows without any allowed key give zero
        output and all-zero probabilities (never NaN).
    """
    # fp32 throughout, also under autocast (which would otherwise run the matmuls in bf16/fp16 again)
    q, k, v = args.q, args.k, args.v
    with torch.autocast(device_type=q.device.type, enabled=False):
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * args.softmax_scale
        allowed = args.allowed()
        allowed = torch.ones((), dtype=torch.bool, device=q.device) if allowed is None else allowed
        allowed = allowed.expand(scores.shape)
        scores = scores.masked_fill(~allowed, float("-inf"))
        row_has_key = allowed.any(-1, keepdim=True)
        scores = torch.where(row_has_key, scores, torch.zeros_like(scores))
        probs = zero_invalid(torch.softmax(scores, dim=-1), row_has_key)
        attn = probs
        if args.dropout_p > 0.0:
            attn = torch.nn.functional.dropout(probs, p=args.dropout_p)
        out = torch.matmul(attn, v.float())
        return out.to(q.dtype), probs.to(q.dtype)

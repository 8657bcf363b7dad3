"""Attention probabilities recomputed from the saved log-sum-exp (for attention maps).

Training never stores the ``(B, H, Lq, Lk)`` probabilities; a backend that returns the natural-log
log-sum-exp ``lse (B, H, Lq)`` lets them be rebuilt on request as ``P = exp(q k^T * scale - lse)``,
exactly normalised. Query rows with no allowed key (``lse = +-inf``) get all-zero probabilities.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polyfuse.attention.masks import allowed_mask
from polyfuse.masking import zero_invalid


@torch.no_grad()
def probabilities_from_lse(q: Tensor, k: Tensor, lse: Tensor, key_padding_mask: Tensor | None = None, *,
                           causal: bool = False, scale: float | None = None) -> Tensor:
    """``(B, H, Lq, Lk)`` pre-dropout probabilities in ``q.dtype`` (detached: for visualisation)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    allowed = allowed_mask(key_padding_mask, q.shape[-2], k.shape[-2], causal=causal, device=q.device)
    if allowed is not None:  # masked scores may exceed lse: mask before exp, not after
        scores = scores.masked_fill(~allowed, float("-inf"))
    lse = lse.float()[..., None]
    finite = torch.isfinite(lse)
    probs = torch.exp(scores - torch.where(finite, lse, torch.zeros((), device=q.device)))
    return zero_invalid(probs, finite).to(q.dtype)

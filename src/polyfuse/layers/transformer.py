"""The pre-/post-norm transformer block shared by the encoders (ViT, BERT, CLIP text) and the fusions."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from polyfuse.attention.varlen import Packing
from polyfuse.layers.attention import MultiHeadAttention
from polyfuse.layers.mlp import Mlp


class LayerScale(nn.Module):
    """Per-channel residual scale ``x * gamma`` (Touvron et al., 2021, CaiT / DeiT III)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class TransformerBlock(nn.Module):
    """Self-attention + MLP with residuals, attention through :mod:`polyfuse.attention`.

    ``norm="pre"`` (ViT, CLIP: ``x + attn(norm(x))``) or ``norm="post"`` (BERT:
    ``norm(x + attn(x))``). Padded keys are masked through ``key_padding_mask (B, L)``;
    ``causal=True`` adds a lower-triangular mask (CLIP text tower). ``layer_scale`` multiplies each
    residual branch by a learned per-channel ``gamma`` (pre-norm only). ``backend`` is resolved
    when the block is built (see :class:`MultiHeadAttention`).

    The attention probabilities are a return value, never kept on the module: ``forward`` returns
    ``(out, probs)``, with ``probs (B, H, L, L)`` only when ``need_weights=True``.

    Packed (varlen) execution: ``x (T, D)`` with its ``packing`` (no mask); norms, MLP and residuals
    run on the real tokens only and attention stays within each sample.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 attn_dropout: float = 0.0, norm: Literal["pre", "post"] = "pre", eps: float = 1e-6,
                 activation: str = "gelu", backend: str | None = None, causal: bool = False,
                 layer_scale: float | None = None, mlp_hidden: int | None = None) -> None:
        super().__init__()
        if norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', got {norm!r}")
        if layer_scale is not None and norm == "post":
            raise ValueError("layer_scale is only defined for pre-norm blocks")
        self.norm_first, self.causal = norm == "pre", causal
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, heads, dropout=attn_dropout, backend=backend)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden or int(dim * mlp_ratio), dropout, activation)
        self.drop = nn.Dropout(dropout)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, need_weights: bool = False,
                packing: Packing | None = None) -> tuple[Tensor, Tensor | None]:
        """``x: (B, L, D)``, ``key_padding_mask: (B, L)`` bool (True = real) -> ``(out (B, L, D), probs)``;
        packed: ``x (T, D)`` and ``packing`` -> ``(out (T, D), probs)``."""
        if packing is not None and key_padding_mask is not None:
            raise ValueError("a packed block call takes its packing, not a key_padding_mask")
        if self.norm_first:
            attn_out, probs = self.attn(self.norm1(x), key_padding_mask=key_padding_mask, causal=self.causal,
                                        need_weights=need_weights, packing=packing)
            x = x + self.ls1(self.drop(attn_out))
            x = x + self.ls2(self.mlp(self.norm2(x)))
        else:
            attn_out, probs = self.attn(x, key_padding_mask=key_padding_mask, causal=self.causal,
                                        need_weights=need_weights, packing=packing)
            x = self.norm1(x + self.drop(attn_out))
            x = self.norm2(x + self.mlp(x))
        return x, probs

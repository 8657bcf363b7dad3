"""Transformer blocks shared by the ViT, BERT-style and CLIP-text encoders (and early fusion)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from polyfuse.attention import MultiHeadAttention

ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu", "relu")


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the GELU approximation OpenAI CLIP was trained with (Radford et al., 2021)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(name: str) -> nn.Module:
    """``gelu`` (erf, timm/BERT), ``gelu_tanh`` (HF ``gelu_new``), ``quick_gelu`` (OpenAI CLIP), ``relu``."""
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "quick_gelu":
        return QuickGELU()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


class LayerScale(nn.Module):
    """Per-channel residual scale ``x * gamma`` (Touvron et al., 2021, CaiT / DeiT III)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """``fc1 -> activation -> dropout -> fc2 -> dropout`` (timm / BERT feed-forward)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, activation: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Self-attention + MLP with residuals, attention through :mod:`polyfuse.attention`.

    ``norm="pre"`` (ViT, CLIP: ``x + attn(norm(x))``) or ``norm="post"`` (BERT:
    ``norm(x + attn(x))``). Padded keys are masked through ``key_padding_mask (B, L)``;
    ``causal=True`` adds a lower-triangular mask (CLIP text tower). ``layer_scale`` multiplies each
    residual branch by a learned per-channel ``gamma`` (pre-norm only).
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
        self.last_attention: Tensor | None = None
        self.keep_attention = False

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``x: (B, L, D)``, ``key_padding_mask: (B, L)`` bool (True = real) -> ``(B, L, D)``."""
        if self.norm_first:
            attn_out, probs = self.attn(self.norm1(x), key_padding_mask=key_padding_mask, causal=self.causal,
                                        need_weights=self.keep_attention)
            x = x + self.ls1(self.drop(attn_out))
            x = x + self.ls2(self.mlp(self.norm2(x)))
        else:
            attn_out, probs = self.attn(x, key_padding_mask=key_padding_mask, causal=self.causal,
                                        need_weights=self.keep_attention)
            x = self.norm1(x + self.drop(attn_out))
            x = self.norm2(x + self.mlp(x))
        self.last_attention = probs
        return x

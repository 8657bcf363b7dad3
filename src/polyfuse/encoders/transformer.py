"""Transformer blocks shared by the ViT and BERT-style encoders (and early fusion)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from polyfuse.attention import MultiHeadAttention


class Mlp(nn.Module):
    """``fc1 -> GELU -> dropout -> fc2`` (timm / BERT feed-forward)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, activation: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh" if activation == "gelu_tanh" else "none")
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Self-attention + MLP with residuals.

    ``norm="pre"`` (ViT, CLIP: ``x + attn(norm(x))``) or ``norm="post"`` (BERT:
    ``norm(x + attn(x))``). Padded keys are masked through ``key_padding_mask (B, L)``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 attn_dropout: float = 0.0, norm: Literal["pre", "post"] = "pre", eps: float = 1e-6,
                 activation: str = "gelu", backend: str | None = None) -> None:
        super().__init__()
        self.norm_first = norm == "pre"
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, heads, dropout=attn_dropout, backend=backend)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout, activation)
        self.drop = nn.Dropout(dropout)
        self.last_attention: Tensor | None = None
        self.keep_attention = False

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``x: (B, L, D)`` -> ``(B, L, D)``."""
        if self.norm_first:
            attn_out, probs = self.attn(self.norm1(x), key_padding_mask=key_padding_mask, need_weights=self.keep_attention)
            x = x + self.drop(attn_out)
            x = x + self.mlp(self.norm2(x))
        else:
            attn_out, probs = self.attn(x, key_padding_mask=key_padding_mask, need_weights=self.keep_attention)
            x = self.norm1(x + self.drop(attn_out))
            x = self.norm2(x + self.mlp(x))
        self.last_attention = probs
        return x

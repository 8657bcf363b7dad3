"""Feed-forward layers: the transformer MLP and its activations (timm ``layers/mlp.py``, BERT, CLIP)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

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


class Mlp(nn.Module):
    """``fc1 -> activation -> dropout -> fc2 -> dropout`` on ``(..., dim)`` (timm / BERT feed-forward)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, activation: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))

"""Tensor Fusion Network: the outer product of ``[h_m; 1]`` over modalities keeps every interaction order."""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.masking import zero_invalid


class ModalitySubnet(nn.Module):
    """``LN -> Linear -> ReLU``: a modality's small embedding ``h_m`` for tensor / low-rank fusion."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def embed_with_one(subnet: ModalitySubnet, encoded: Encoded) -> Tensor:
    """``[h_m; 1]`` with ``h_m = subnet(pool(x_m))``, and ``h_m = 0`` for absent samples -> ``(B, d + 1)``."""
    h = subnet(encoded.pooled())
    h = zero_invalid(h, encoded.present_or_full())
    return torch.cat([h, h.new_ones(h.shape[0], 1)], dim=-1)


@register("tensor")
class TensorFusion(Fusion):
    """TFN: ``z = MLP(vec([h_1; 1] (x) [h_2; 1] (x) ... (x) [h_M; 1]))``.

    Zadeh, Chen, Poria, Cambria & Morency, "Tensor Fusion Network for Multimodal Sentiment
    Analysis", EMNLP 2017. The appended 1 makes the outer product contain the unimodal terms,
    every pairwise (bimodal) term and the full M-way term. ``h_m`` comes from a small per-modality
    subnet on the masked-mean pooled tokens. Any number of modalities, but the tensor has
    ``prod_m (d_m + 1)`` entries, so keep ``hidden_per_modality`` small for many modalities.

    Missing modalities: an absent modality's ``h_m`` is set to 0, so ``[h_m; 1] = e_last`` and the
    tensor reduces exactly to the sub-tensor of interactions among the *present* modalities
    (absent values are never read).

    Args:
        dims, out_dim: see :class:`Fusion`. hidden_per_modality: ``d``, size of each ``h_m``.
        hidden: post-fusion MLP width. dropout: on ``h_m`` and in the MLP.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, hidden_per_modality: int = 16, hidden: int = 128,
                 dropout: float = 0.1) -> None:
        super().__init__(dims, out_dim)
        self.subnets = nn.ModuleDict({m: ModalitySubnet(d, hidden_per_modality, dropout) for m, d in self.dims.items()})
        size = math.prod(hidden_per_modality + 1 for _ in self.dims)
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        fused: Tensor | None = None
        for name, encoded in inputs.items():
            v = embed_with_one(self.subnets[name], encoded)  # (B, d + 1)
            fused = v if fused is None else (fused[:, :, None] * v[:, None, :]).flatten(1)
        assert fused is not None
        return FusionOutput(pooled=self.mlp(fused))

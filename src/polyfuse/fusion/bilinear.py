"""Factorised (low-rank) bilinear pooling: MFB, with MLB as the ``factor=1`` special case."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.masking import fill_absent


def signed_sqrt(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Power normalisation ``sign(x) sqrt(|x|)``, with a finite gradient at 0."""
    return torch.sign(x) * torch.sqrt(x.abs() + eps)


@register("bilinear")
class BilinearFusion(Fusion):
    """Multi-modal Factorized Bilinear pooling (MFB).

    ``z = SumPool_k( prod_m U_m^T x_m )`` with ``U_m: (D_m, k * o)``, followed by power
    normalisation, L2 normalisation and a linear map to ``out_dim``. Yu, Yu, Fan & Tao,
    "Multi-modal Factorized Bilinear Pooling with Co-Attention Learning for Visual Question
    Answering", ICCV 2017; with ``factor=1`` it is the low-rank bilinear pooling (MLB) of Kim, On,
    Lim, Kim, Ha & Zhang, "Hadamard Product for Low-rank Bilinear Pooling", ICLR 2017.
    ``x_m = LN(pool(x_m))``, pooled by the masked mean over real tokens.

    Modalities: the papers fuse two; for ``M > 2`` the Hadamard product runs over all ``M``
    projections (a rank-constrained multilinear pooling, the same factorisation applied to the
    M-way tensor).

    Missing modalities: an absent modality's ``x_m`` is replaced by a learned per-modality missing
    embedding before projection, so the product keeps the present modalities' interactions with a
    learned stand-in; absent values are never read.

    Args:
        dims, out_dim: see :class:`Fusion`. pooled_dim: ``o``, the MFB output size (default ``out_dim``).
        factor: ``k``, the sum-pooling window / rank per output unit. dropout: on the product.
    """

    min_modalities = 2

    def __init__(self, dims: Mapping[str, int], out_dim: int, pooled_dim: int | None = None, factor: int = 5,
                 dropout: float = 0.1) -> None:
        super().__init__(dims, out_dim)
        self.pooled_dim, self.factor = pooled_dim or out_dim, factor
        self.norms = nn.ModuleDict({m: nn.LayerNorm(d) for m, d in self.dims.items()})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(d) * 0.02) for m, d in self.dims.items()})
        self.proj = nn.ModuleDict({m: nn.Linear(d, self.pooled_dim * factor) for m, d in self.dims.items()})
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(self.pooled_dim, out_dim)

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        product: Tensor | None = None
        for name, encoded in inputs.items():
            x = fill_absent(self.norms[name](encoded.pooled()), encoded.present_or_full(), self.missing[name])
            projected = self.proj[name](x)
            product = projected if product is None else product * projected
        assert product is not None
        z = self.drop(product).view(-1, self.pooled_dim, self.factor).sum(-1)  # (B, o)
        z = F.normalize(signed_sqrt(z), dim=-1)
        return FusionOutput(pooled=self.out(z))

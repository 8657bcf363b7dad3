"""Synthetic paired views with known, well-separated canonical correlations."""

from __future__ import annotations

import torch
from torch import Tensor


def correlated_views(n: int = 2000, dx: int = 5, dy: int = 4, strengths: tuple[float, ...] = (2.0, 1.0, 0.5),
                     seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """``x (n, dx)``, ``y (n, dy)`` sharing ``len(strengths)`` latent factors, rotated, plus unit noise."""
    generator = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, len(strengths), generator=generator, dtype=dtype) * torch.tensor(strengths, dtype=dtype)

    def view(dim: int) -> Tensor:
        signal = torch.cat([shared, torch.zeros(n, dim - shared.shape[1], dtype=dtype)], 1)
        rotation = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=dtype))[0]
        return signal @ rotation + torch.randn(n, dim, generator=generator, dtype=dtype)

    return view(dx), view(dy)

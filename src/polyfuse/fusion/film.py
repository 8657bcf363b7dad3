"""FiLM: the other modalities predict a feature-wise affine modulation of one target modality's tokens."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.masking import masked_mean, present_mean, substitute_missing_token, zero_invalid


class FiLMBlock(nn.Module):
    """Residual FiLM block on tokens: ``x + W_2 ReLU(gamma * LN(W_1 x) + beta)`` (Perez et al., 2018, Fig. 3)."""

    def __init__(self, width: int, cond_dim: int, dropout: float) -> None:
        super().__init__()
        self.inner = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, elementwise_affine=False)  # FiLM supplies the affine
        self.film = nn.Linear(cond_dim, 2 * width)
        self.outer = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        """``x: (B, L, width)``, ``condition: (B, cond_dim)``."""
        delta_gamma, beta = self.film(condition)[:, None].chunk(2, dim=-1)
        h = torch.relu((1.0 + delta_gamma) * self.norm(self.inner(x)) + beta)
        return x + self.drop(self.outer(h))


@register("film")
class FiLMFusion(Fusion):
    """Feature-wise Linear Modulation of the ``target`` modality's tokens by the other modalities.

    ``c = mean_m W_m pool(x_m)`` over the conditioning modalities; each of ``depth`` residual blocks
    applies ``gamma(c) * h + beta(c)`` to the target's normalised hidden features. Perez, Strub,
    de Vries, Dumoulin & Courville, "FiLM: Visual Reasoning with a General Conditioning Layer",
    AAAI 2018 (``gamma`` is predicted as ``1 + delta``, as in the paper's implementation). Any
    number ``>= 2`` of modalities: one target, the rest condition it.

    Output: the modulated target tokens ``(B, L_target, out_dim)`` and their masked mean.

    Padding: conditioning vectors are masked means; target padding stays masked and zero.

    Missing modalities: the conditioning vector is the renormalised average over the *present*
    conditioning modalities, and a learned "no condition" vector when none is present. An absent
    target is replaced by one learned [MISSING] token, which is then modulated by the conditions.

    Args:
        dims, out_dim: see :class:`Fusion`. target: modality that is modulated (default: the first).
        width: hidden width (default ``out_dim``). depth: number of FiLM blocks. dropout: in blocks.
    """

    min_modalities = 2

    def __init__(self, dims: Mapping[str, int], out_dim: int, target: str | None = None, width: int | None = None,
                 depth: int = 2, dropout: float = 0.1) -> None:
        super().__init__(dims, out_dim)
        self.target = self.modalities[0] if target is None else target
        if self.target not in self.dims:
            raise ValueError(f"FiLMFusion target {self.target!r} is not one of the modalities {self.modalities}")
        width = width or out_dim
        self.conditioners = [m for m in self.modalities if m != self.target]
        self.target_proj = nn.Linear(self.dims[self.target], width)
        self.missing_target = nn.Parameter(torch.randn(width) * 0.02)
        self.condition_proj = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(self.dims[m]), nn.Linear(self.dims[m], width)) for m in self.conditioners})
        self.no_condition = nn.Parameter(torch.zeros(width))
        self.blocks = nn.ModuleList([FiLMBlock(width, width, dropout) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_dim)

    def condition(self, inputs: dict[str, Encoded]) -> Tensor:
        """Renormalised mean of the present conditioning modalities, ``(B, width)``."""
        stacked = torch.stack([self.condition_proj[m](inputs[m].pooled()) for m in self.conditioners], dim=1)
        present = torch.stack([inputs[m].present_or_full() for m in self.conditioners], dim=1)
        fused = present_mean(stacked, present)
        return torch.where(present.any(1, keepdim=True), fused, self.no_condition.to(fused.dtype).expand_as(fused))

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        target = inputs[self.target]
        x, mask = substitute_missing_token(self.target_proj(target.tokens), target.mask, target.present_or_full(),
                                           self.missing_target)
        condition = self.condition(inputs)
        for block in self.blocks:
            x = block(x, condition)
        tokens = zero_invalid(self.out(self.out_norm(x)), mask)
        return FusionOutput(pooled=masked_mean(tokens, mask), tokens=tokens, mask=mask)

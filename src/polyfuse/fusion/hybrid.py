"""Hybrid fusion: an early (single-stream) fusion and late per-modality heads, combined."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.early import EarlyFusion
from polyfuse.fusion.late import LateFusion, Weighting


@register("hybrid")
class HybridFusion(Fusion):
    """Early + late: ``z = W [early(x); late(x)] + b``.

    The joint representation of a single-stream transformer (:class:`EarlyFusion`) is combined
    with the weighted average of independent per-modality heads (:class:`LateFusion`), so the
    model keeps both cross-modal interactions and unimodal evidence. Atrey, Hossain, El Saddik &
    Kankanhalli, "Multimodal fusion for multimedia analysis: a survey", Multimedia Systems 2010
    (Sec. 2.3, hybrid fusion). Any number of modalities.

    ``tokens``/``mask``/``attentions`` are those of the early branch.

    Padding and missing modalities: as in the two branches -- masking plus learned [MISS_m]
    tokens in the early branch, renormalised averaging over the present modalities in the late one.

    Args:
        dims, out_dim: see :class:`Fusion`. width, depth, heads, mlp_ratio: of the early branch.
        hidden, weighting: of the late branch. dropout: in both. packing: the early branch runs packed
        (:class:`EarlyFusion`, docs/packing.md).
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, width: int | None = None, depth: int = 1,
                 heads: int = 4, mlp_ratio: float = 2.0, hidden: int = 128, weighting: Weighting = "learned",
                 dropout: float = 0.1, packing: bool = False) -> None:
        super().__init__(dims, out_dim)
        self.early = EarlyFusion(dims, out_dim, width=width, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
                                 dropout=dropout, packing=packing)
        self.late = LateFusion(dims, out_dim, hidden=hidden, dropout=dropout, weighting=weighting)
        self.combine = nn.Linear(2 * out_dim, out_dim)

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        early = self.early.fuse(inputs, return_attention=return_attention)
        late = self.late.fuse(inputs)
        pooled = self.combine(torch.cat([early.pooled, late.pooled], dim=-1))
        return FusionOutput(pooled=pooled, tokens=early.tokens, mask=early.mask, attentions=early.attentions)

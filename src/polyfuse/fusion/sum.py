"""Sum and mean fusion: project every modality to a shared space and add (or average) them."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.masking import present_mean


@register("sum")
class SumFusion(Fusion):
    """Element-wise sum of per-modality projections, then ``GELU -> Linear``.

    ``s = sum_m W_m LN(pool(x_m)) + b_m``, ``z = W_o GELU(s) + b_o``.

    The additive baseline of the fusion literature (e.g. the element-wise sum of Baltrusaitis,
    Ahuja & Morency, "Multimodal Machine Learning: A Survey and Taxonomy", TPAMI 2019; the
    ``sum`` option of TorchMultimodal's ``DeepsetFusionModule``, after Zaheer et al., "Deep Sets",
    NeurIPS 2017). Any number of modalities.

    Padding: ``pool`` is the masked mean over real tokens.

    Missing modalities: an absent modality contributes nothing to the sum (its term is selected
    out, not multiplied by zero). The magnitude therefore grows with the number of present
    modalities; :class:`MeanFusion` renormalises instead. A sample with no present modality gives
    zeros before the output layer.

    Args:
        dims, out_dim: see :class:`Fusion`. dropout: dropout before the output linear.
    """

    reduction = "sum"

    def __init__(self, dims: Mapping[str, int], out_dim: int, dropout: float = 0.1) -> None:
        super().__init__(dims, out_dim)
        self.norms = nn.ModuleDict({m: nn.LayerNorm(d) for m, d in self.dims.items()})
        self.proj = nn.ModuleDict({m: nn.Linear(d, out_dim) for m, d in self.dims.items()})
        self.out = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(out_dim, out_dim))

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        stacked = torch.stack([self.proj[m](self.norms[m](enc.pooled())) for m, enc in inputs.items()], dim=1)
        present = torch.stack([enc.present_or_full() for enc in inputs.values()], dim=1)  # (B, M)
        fused = present_mean(stacked, present)  # renormalised average over present modalities
        if self.reduction == "sum":
            fused = fused * present.sum(1, keepdim=True).to(fused.dtype)
        return FusionOutput(pooled=self.out(fused))


@register("mean")
class MeanFusion(SumFusion):
    """Average of per-modality projections: ``z = mean_{m present} W_m LN(pool(x_m)) + b_m``.

    Same model as :class:`SumFusion` (Baltrusaitis et al., TPAMI 2019; Zaheer et al., "Deep Sets",
    NeurIPS 2017 -- the ``mean`` pooling of TorchMultimodal's ``DeepsetFusionModule``), but then
    ``GELU -> Linear`` of the average. Any number of modalities.

    Missing modalities: the average runs over the *present* modalities only (renormalised
    averaging), so the scale does not depend on how many are missing. A sample with no present
    modality gives zeros before the output layer.
    """

    reduction = "mean"

"""Gated Multimodal Unit: input-dependent gates choose, per hidden unit, how much each modality contributes."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.masking import fill_absent, present_mean


@register("gmu")
class GatedMultimodalUnit(Fusion):
    """GMU: ``h_m = tanh(W_m x_m)``, ``z = softmax_m(W_z [x_1; ...; x_M])``, ``h = sum_m z_m * h_m``.

    Arevalo, Solorio, Montes-y-Gomez & Gonzalez, "Gated Multimodal Units for Information Fusion",
    ICLR workshop 2017. The gates are element-wise (one per hidden unit). For two modalities the
    softmax over ``M = 2`` gates is exactly the paper's ``z * h_1 + (1 - z) * h_2`` with
    ``z = sigmoid(.)``; for more modalities it is the paper's multi-input extension with gates that
    sum to one. ``x_m = LN(pool(x_m))``, pooled by the masked mean over real tokens.

    Missing modalities: the gate softmax runs over the *present* modalities only (an absent
    modality gets gate 0 and the others are renormalised); the gate *input* uses a learned
    per-modality missing embedding in place of an absent ``x_m``, so the gates know what is
    missing. A sample with no present modality gives ``h = 0``. Any number of modalities.

    Args:
        dims, out_dim: see :class:`Fusion` (``out_dim`` is the GMU hidden size). dropout: on ``h``.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, dropout: float = 0.1) -> None:
        super().__init__(dims, out_dim)
        self.norms = nn.ModuleDict({m: nn.LayerNorm(d) for m, d in self.dims.items()})
        self.hidden = nn.ModuleDict({m: nn.Linear(d, out_dim) for m, d in self.dims.items()})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(d) * 0.02) for m, d in self.dims.items()})
        self.gate = nn.Linear(sum(self.dims.values()), len(self.dims) * out_dim)
        self.drop = nn.Dropout(dropout)

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        pooled = {m: self.norms[m](enc.pooled()) for m, enc in inputs.items()}
        present = torch.stack([enc.present_or_full() for enc in inputs.values()], dim=1)  # (B, M)
        hidden = torch.stack([torch.tanh(self.hidden[m](x)) for m, x in pooled.items()], dim=1)  # (B, M, out)
        gate_input = torch.cat([fill_absent(x, inputs[m].present_or_full(), self.missing[m])
                                for m, x in pooled.items()], dim=-1)
        gate_logits = self.gate(gate_input).view(hidden.shape)  # (B, M, out)
        return FusionOutput(pooled=self.drop(present_mean(hidden, present, gate_logits)))

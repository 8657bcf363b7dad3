"""Concatenation fusion: the standard late-concatenation baseline."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.masking import fill_absent


@register("concat")
class ConcatFusion(Fusion):
    """Pool each modality, concatenate, and map with an MLP to ``out_dim``.

    ``z = MLP([pool(x_1); ...; pool(x_M)])`` where ``pool`` is the masked mean over real tokens
    (the classic feature-concatenation baseline; Baltrusaitis, Ahuja & Morency, "Multimodal Machine
    Learning: A Survey and Taxonomy", TPAMI 2019).

    Padding: excluded by the masked mean.

    Missing modalities: an absent modality's pooled vector is replaced by a learned per-modality
    "missing" embedding, so the output never depends on absent values. Works for any number of
    modalities (including one).

    Args:
        dims, out_dim: see :class:`Fusion`. hidden: MLP hidden width (``0`` = a single linear).
        dropout: dropout inside the MLP. normalize: LayerNorm each pooled vector before concatenation.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, hidden: int = 256, dropout: float = 0.1,
                 normalize: bool = True) -> None:
        super().__init__(dims, out_dim)
        self.norms = nn.ModuleDict({m: nn.LayerNorm(d) if normalize else nn.Identity() for m, d in self.dims.items()})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m, d in self.dims.items()})
        total = sum(self.dims.values())
        if hidden:
            self.mlp = nn.Sequential(nn.Linear(total, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))
        else:
            self.mlp = nn.Linear(total, out_dim)

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        parts = [fill_absent(self.norms[name](encoded.pooled()), encoded.present_or_full(), self.missing[name])
                 for name, encoded in inputs.items()]
        return FusionOutput(pooled=self.mlp(torch.cat(parts, dim=-1)))

"""Late fusion: an independent head per modality, outputs combined by (learned) weighted averaging."""

from __future__ import annotations

from typing import Literal, Mapping

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.masking import present_mean

Weighting = Literal["mean", "learned"]


class ModalityHead(nn.Module):
    """``LN -> Linear -> GELU -> Dropout -> Linear``: one modality's own predictor into ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@register("late")
class LateFusion(Fusion):
    """Decision-level (late) fusion: ``z = sum_m w_m f_m(pool(x_m))`` over present modalities.

    Each modality has its own head ``f_m`` that sees only that modality; the outputs are averaged
    uniformly (``weighting="mean"``) or with learned global weights ``w = softmax(a)``
    (``weighting="learned"``). Snoek, Worring & Smeulders, "Early versus Late Fusion in Semantic
    Video Analysis", ACM Multimedia 2005. With a linear task head after the fusion (the default
    classification head), averaging the heads' outputs is averaging per-modality predictions. Any
    number of modalities.

    Padding: ``pool`` is the masked mean over real tokens.

    Missing modalities: renormalised averaging -- the weights are a softmax over the *present*
    modalities only, so an absent modality's head is never evaluated into the result and the
    others' weights rise to sum to one. A sample with no present modality gives zeros.

    Args:
        dims, out_dim: see :class:`Fusion`. hidden: width of each head's hidden layer.
        dropout: dropout in the heads. weighting: ``"mean"`` or ``"learned"``.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, hidden: int = 128, dropout: float = 0.1,
                 weighting: Weighting = "mean") -> None:
        super().__init__(dims, out_dim)
        if weighting not in ("mean", "learned"):
            raise ValueError(f"LateFusion weighting must be 'mean' or 'learned', got {weighting!r}")
        self.weighting = weighting
        self.heads = nn.ModuleDict({m: ModalityHead(d, out_dim, hidden, dropout) for m, d in self.dims.items()})
        self.weight_logits = nn.Parameter(torch.zeros(len(self.dims))) if weighting == "learned" else None

    def modality_outputs(self, inputs: dict[str, Encoded]) -> tuple[Tensor, Tensor]:
        """Each head's output ``(B, M, out_dim)`` and presence ``(B, M)``."""
        outputs = torch.stack([self.heads[m](enc.pooled()) for m, enc in inputs.items()], dim=1)
        present = torch.stack([enc.present_or_full() for enc in inputs.values()], dim=1)
        return outputs, present

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        outputs, present = self.modality_outputs(inputs)
        return FusionOutput(pooled=present_mean(outputs, present, self.weight_logits))

"""Modality dropout: drop whole modalities per sample during training, for robustness to missing inputs."""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded

__all__ = ["ModalityDropout"]


class ModalityDropout(nn.Module):
    """Mark each modality absent (``present=False``) for a random subset of samples, in training only.

    Each modality ``m`` is dropped independently per sample with probability ``p[m]``; a sample
    then keeps at least ``min(min_present, #modalities it had)`` modalities: when the draw leaves
    it with fewer, dropped modalities are restored at random until it has enough. Modalities that
    were already absent stay absent (nothing is ever made present). In eval mode the input is
    returned unchanged. The fusion modules then apply their own missing-modality strategy, so
    training sees the same missing patterns as evaluation.

    Neverova, Wolf, Taylor & Nebout, "ModDrop: Adaptive Multi-modal Gesture Recognition", TPAMI
    2016; the same idea as the missing-modality training of Ma et al., CVPR 2022.

    Args:
        p: drop probability for every modality, or ``{modality: p}`` (unlisted modalities: 0).
        min_present: the fewest modalities a sample keeps (``>= 1`` so no sample loses everything).

    ``forward({m: Encoded}) -> {m: Encoded}``: a new dict; tokens and masks are shared, only
    ``present`` is replaced.
    """

    def __init__(self, p: float | Mapping[str, float] = 0.3, min_present: int = 1) -> None:
        super().__init__()
        probabilities = dict(p) if isinstance(p, Mapping) else {}
        values = list(probabilities.values()) if probabilities else [float(p)]  # type: ignore[arg-type]
        if any(not 0.0 <= float(v) <= 1.0 for v in values):
            raise ValueError(f"ModalityDropout probabilities must be in [0, 1], got {p}")
        if min_present < 1:
            raise ValueError(f"ModalityDropout min_present must be >= 1 (never drop every modality), got {min_present}")
        self.p = {name: float(v) for name, v in probabilities.items()} if probabilities else float(p)  # type: ignore[arg-type]
        self.min_present = int(min_present)

    def probability(self, modality: str) -> float:
        """Drop probability of ``modality``."""
        return self.p.get(modality, 0.0) if isinstance(self.p, dict) else self.p

    def forward(self, inputs: Mapping[str, Encoded]) -> dict[str, Encoded]:
        if not self.training or not inputs:
            return dict(inputs)
        names = list(inputs)
        first = inputs[names[0]]
        device = first.tokens.device
        present = torch.stack([inputs[m].present_or_full() for m in names], dim=1)  # (B, M)
        probs = torch.tensor([self.probability(m) for m in names], device=device)
        keep = present & (torch.rand(present.shape, device=device) >= probs)
        keep = self._restore(keep, present)
        return {m: replace(inputs[m], present=keep[:, i]) for i, m in enumerate(names)}

    def _restore(self, keep: Tensor, present: Tensor) -> Tensor:
        """Give back dropped modalities, at random, to samples left with fewer than they must keep."""
        need = present.sum(1).clamp(max=self.min_present)  # (B,)
        short = keep.sum(1) < need
        if not bool(short.any()):
            return keep
        # rank: kept first, then dropped-but-present in random order, then absent
        priority = keep.float() * 2.0 + present.float() * torch.rand(keep.shape, device=keep.device)
        order = priority.argsort(dim=1, descending=True)
        rank = order.argsort(dim=1)
        chosen = (rank < need[:, None]) & present
        return torch.where(short[:, None], keep | chosen, keep)

    def extra_repr(self) -> str:
        return f"p={self.p}, min_present={self.min_present}"

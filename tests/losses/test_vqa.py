"""vqa_soft_bce: the BUTD / ViLT loss, summed over answers and averaged over questions."""

from __future__ import annotations

import math

import pytest
import torch

from polyfuse.losses import vqa_soft_bce


def test_hand_computed_value() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    targets = torch.tensor([[1.0, 0.3], [0.0, 0.0]])

    def bce(x: float, y: float) -> float:
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = (bce(0, 1) + bce(2, 0.3) + bce(-1, 0) + bce(0.5, 0)) / 2  # sum over answers, mean over questions
    assert vqa_soft_bce(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match="differ"):
        vqa_soft_bce(torch.zeros(2, 3), torch.zeros(2, 4))

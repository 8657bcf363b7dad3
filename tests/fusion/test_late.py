"""LateFusion: per-modality heads, renormalised (learned) weighted average."""

from __future__ import annotations

import pytest
import torch

from polyfuse.fusion import LateFusion

from .fusion_cases import DIMS, make_fusion, make_inputs


@pytest.mark.parametrize("weighting", ["mean", "learned"])
def test_weighted_average_over_present_heads(weighting):
    module = make_fusion("late", weighting=weighting).eval()
    if module.weight_logits is not None:
        with torch.no_grad():
            module.weight_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    inputs = make_inputs()
    with torch.no_grad():
        heads, present = module.modality_outputs(inputs)
        logits = torch.zeros(3) if module.weight_logits is None else module.weight_logits
        for i in range(present.shape[0]):
            weights = torch.softmax(logits[present[i]], 0)
            expected = (weights[:, None] * heads[i, present[i]]).sum(0)
            torch.testing.assert_close(module(inputs).pooled[i], expected)


def test_single_present_modality_gives_its_own_head():
    module = make_fusion("late", weighting="learned").eval()
    inputs = make_inputs()
    with torch.no_grad():
        expected = module.heads["audio"](inputs["audio"].pooled())[2]  # sample 2: audio only
        torch.testing.assert_close(module(inputs).pooled[2], expected)


def test_unknown_weighting_is_rejected():
    with pytest.raises(ValueError, match="weighting"):
        LateFusion(DIMS, 16, weighting="max")

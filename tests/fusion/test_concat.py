"""ConcatFusion: pooled vectors concatenated, learned missing embedding for absent modalities."""

from __future__ import annotations

import torch
from torch import nn

from polyfuse.fusion import ConcatFusion

from .fusion_cases import DIMS, make_fusion, make_inputs


def test_absent_modality_uses_its_missing_embedding():
    module = make_fusion("concat", dropout=0.0).eval()
    inputs = make_inputs()
    with torch.no_grad():
        module.missing["audio"].fill_(3.0)
        out = module(inputs).pooled
        # sample 1 has only the image: the MLP sees [LN(pool(image)); missing_audio; missing_text]
        expected_input = torch.cat([module.norms["image"](inputs["image"].pooled()[1]),
                                    module.missing["audio"], module.missing["text"]])
        torch.testing.assert_close(out[1], module.mlp(expected_input))


def test_hidden_zero_is_a_single_linear():
    module = ConcatFusion(DIMS, 16, hidden=0)
    assert isinstance(module.mlp, nn.Linear) and module.mlp.in_features == sum(DIMS.values())

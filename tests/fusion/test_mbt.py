"""BottleneckFusion (MBT): modalities exchange information only through the bottleneck tokens."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from polyfuse.fusion import BottleneckFusion

from .fusion_cases import DIMS, make_fusion, make_inputs


def test_map_shapes_before_and_after_the_fusion_layer():
    module = make_fusion("mbt", depth=2, fusion_layer=1).eval()
    inputs = make_inputs()
    with torch.no_grad():
        out = module(inputs, return_attention=True)
    length = inputs["image"].tokens.shape[1] + 1  # [CLS] + tokens
    assert out.attentions["image/layer0"].shape[-1] == length
    assert out.attentions["image/layer1"].shape[-1] == length + 2  # + 2 bottleneck tokens


def test_streams_read_other_modalities_only_after_a_fusion_layer():
    """Layer 0 (a fusion layer) only writes the bottleneck; layer 1 reads what the others wrote."""
    module = make_fusion("mbt", depth=2, fusion_layer=0).eval()
    inputs = make_inputs(presence=torch.ones(8, 3, dtype=torch.bool))
    changed = dict(inputs, audio=replace(inputs["audio"], tokens=inputs["audio"].tokens + 1))
    with torch.no_grad():
        a = module(inputs, return_attention=True).attentions
        b = module(changed, return_attention=True).attentions
    assert torch.equal(a["image/layer0"], b["image/layer0"])
    assert not torch.allclose(a["image/layer1"], b["image/layer1"])


def test_fusion_layer_must_be_inside_the_stack():
    with pytest.raises(ValueError, match="fusion_layer"):
        BottleneckFusion(DIMS, 16, depth=2, fusion_layer=2)

"""TensorFusion (TFN): outer product of [h_m; 1]; absent modality -> only present interactions."""

from __future__ import annotations

import torch

from polyfuse.fusion.tensor import embed_with_one

from .fusion_cases import make_fusion, make_inputs


def test_outer_product_matches_einsum():
    module = make_fusion("tensor", dropout=0.0).eval()
    inputs = make_inputs()
    captured = {}
    module.mlp.register_forward_hook(lambda mod, args, out: captured.update(z=args[0]))
    with torch.no_grad():
        module(inputs)
        v = [embed_with_one(module.subnets[m], enc) for m, enc in inputs.items()]
        expected = torch.einsum("bi,bj,bk->bijk", *v).flatten(1)
    torch.testing.assert_close(captured["z"], expected)


def test_absent_modality_keeps_the_present_subtensor():
    module = make_fusion("tensor", dropout=0.0).eval()
    inputs = make_inputs()
    with torch.no_grad():
        v_audio = embed_with_one(module.subnets["audio"], inputs["audio"])
    assert torch.equal(v_audio[1], torch.cat([torch.zeros(v_audio.shape[1] - 1), torch.ones(1)]))  # absent

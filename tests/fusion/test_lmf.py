"""LowRankTensorFusion (LMF): registered factors; equals a rank-r linear map of the TFN tensor."""

from __future__ import annotations

import torch

from polyfuse.fusion.tensor import embed_with_one

from .fusion_cases import make_fusion, make_inputs


def test_factors_are_registered_parameters():
    module = make_fusion("lmf")
    names = {name for name, _ in module.named_parameters()}
    assert {"factors.image", "factors.audio", "factors.text", "rank_weights", "bias"} <= names
    assert all(f"factors.{m}" in module.state_dict() for m in ("image", "audio", "text"))


def test_equals_full_tensor_fusion_with_low_rank_weight():
    module = make_fusion("lmf", dropout=0.0).eval()
    inputs = make_inputs()
    with torch.no_grad():
        v = [embed_with_one(module.subnets[m], enc) for m, enc in inputs.items()]
        f = [module.factors[m] for m in inputs]
        weight = torch.einsum("r,rio,rjo,rko->ijko", module.rank_weights[0], *f)  # the implied TFN weight
        expected = torch.einsum("bi,bj,bk,ijko->bo", *v, weight) + module.bias
        torch.testing.assert_close(module(inputs).pooled, expected, atol=1e-5, rtol=1e-4)

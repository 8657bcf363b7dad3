"""BilinearFusion (MFB / MLB): factorised bilinear pooling with power and L2 normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from polyfuse.fusion.bilinear import signed_sqrt

from .fusion_cases import make_fusion, make_inputs


def test_matches_mfb_formula_for_two_modalities():
    dims = {"image": 12, "text": 10}
    module = make_fusion("bilinear", dims=dims, dropout=0.0).eval()
    inputs = make_inputs(presence=torch.ones(4, 2, dtype=torch.bool), dims=dims, batch=4)
    with torch.no_grad():
        x = {m: module.norms[m](enc.pooled()) for m, enc in inputs.items()}
        joint = module.proj["image"](x["image"]) * module.proj["text"](x["text"])
        z = joint.view(4, module.pooled_dim, module.factor).sum(-1)
        z = F.normalize(torch.sign(z) * torch.sqrt(z.abs()), dim=-1)
        torch.testing.assert_close(module(inputs).pooled, module.out(z), atol=1e-5, rtol=1e-4)


def test_signed_sqrt_has_a_finite_gradient_at_zero():
    x = torch.tensor([0.0, -4.0, 9.0], requires_grad=True)
    signed_sqrt(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(signed_sqrt(x.detach()), torch.tensor([0.0, -2.0, 3.0]), atol=1e-4, rtol=0)


def test_factor_one_is_mlb():
    module = make_fusion("bilinear", factor=1)
    assert module.proj["image"].out_features == module.pooled_dim

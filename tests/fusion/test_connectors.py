"""Linear and MLP connectors (LLaVA / LLaVA-1.5): per-modality token maps into a language model's width."""

from __future__ import annotations

import torch

from polyfuse.fusion import Connector

from .fusion_cases import DIMS, OUT_DIM, make_fusion, make_inputs


def test_connect_keeps_tokens_mask_and_presence_per_modality():
    for name in ("linear_connector", "mlp_connector"):
        module = make_fusion(name).eval()
        inputs = make_inputs()
        with torch.no_grad():
            out = module.connect(inputs)
        assert isinstance(module, Connector) and set(out) == set(DIMS)
        for modality, encoded in inputs.items():
            valid = encoded.mask & encoded.present[:, None]
            assert out[modality].tokens.shape == (*encoded.tokens.shape[:2], OUT_DIM)
            assert torch.equal(out[modality].mask, valid)
            assert torch.equal(out[modality].present, encoded.present)
            assert torch.all(out[modality].tokens[~valid] == 0)


def test_mlp_is_linear_gelu_linear_on_each_token():
    module = make_fusion("mlp_connector").eval()
    inputs = make_inputs()
    mlp = module.mlp["image"]
    with torch.no_grad():
        out = module.connect({"image": inputs["image"]})["image"]
        expected = mlp.linear_2(torch.nn.functional.gelu(mlp.linear_1(inputs["image"].tokens)))
    valid = out.mask
    torch.testing.assert_close(out.tokens[valid], expected[valid])


def test_padding_values_do_not_leak():
    module = make_fusion("linear_connector").eval()
    inputs = make_inputs()
    noisy = make_inputs()
    for name, encoded in noisy.items():
        encoded.tokens[~encoded.mask] = 1e4
    with torch.no_grad():
        a, b = module.connect(inputs), module.connect(noisy)
    for name in DIMS:
        torch.testing.assert_close(a[name].tokens, b[name].tokens)

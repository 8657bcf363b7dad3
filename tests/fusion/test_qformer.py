"""Q-Former connector (BLIP-2): learned queries with self- and cross-attention, projected to the LM width."""

from __future__ import annotations

import torch

from polyfuse.batch import Encoded

from .fusion_cases import make_fusion, make_inputs


def test_queries_become_the_tokens_and_cross_attention_frequency():
    module = make_fusion("qformer_connector").eval()
    layers = module.layers["image"]
    assert [layer.cross is not None for layer in layers] == [True, False]  # depth 2, every 2nd layer
    inputs = make_inputs()
    with torch.no_grad():
        out = module.connect(inputs)
    for name, encoded in inputs.items():
        assert out[name].tokens.shape == (8, 3, 16)
        assert torch.equal(out[name].mask, encoded.present[:, None].expand(8, 3))


def test_output_depends_on_the_features_and_not_on_padding():
    module = make_fusion("qformer_connector").eval()
    tokens = torch.randn(2, 3, 12)
    mask = torch.tensor([[True, True, False], [True, True, False]])
    with torch.no_grad():
        a = module.connect({"image": Encoded(tokens, mask)})["image"].tokens
        b = module.connect({"image": Encoded(torch.cat([tokens[:, :2], tokens[:, 2:] + 100], 1), mask)})["image"].tokens
        c = module.connect({"image": Encoded(tokens + 1, mask)})["image"].tokens
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)

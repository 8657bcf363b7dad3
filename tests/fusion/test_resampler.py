"""Perceiver resampler connector (Flamingo): a fixed number of tokens per modality, whatever the input length."""

from __future__ import annotations

import torch

from polyfuse.batch import Encoded

from .fusion_cases import make_fusion, make_inputs


def test_fixed_number_of_tokens_and_absent_samples_masked():
    module = make_fusion("resampler_connector").eval()
    inputs = make_inputs()
    with torch.no_grad():
        out = module.connect(inputs)
    for name, encoded in inputs.items():
        assert out[name].tokens.shape == (8, 3, 16)
        assert torch.equal(out[name].mask, encoded.present[:, None].expand(8, 3))
        assert torch.all(out[name].tokens[~encoded.present] == 0)


def test_output_ignores_padded_tokens_and_input_length():
    module = make_fusion("resampler_connector").eval()
    tokens = torch.randn(2, 4, 12)
    short = Encoded(tokens[:, :2])
    padded = Encoded(torch.cat([tokens[:, :2], torch.full((2, 5, 12), 1e3)], 1),
                     torch.tensor([[True] * 2 + [False] * 5] * 2))
    with torch.no_grad():
        a = module.connect({"image": short})["image"].tokens
        b = module.connect({"image": padded})["image"].tokens
    torch.testing.assert_close(a, b)

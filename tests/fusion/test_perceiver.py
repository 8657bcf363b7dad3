"""PerceiverFusion: learned latents read every present token through cross-attention."""

from __future__ import annotations

import torch

from .fusion_cases import make_fusion, make_inputs


def test_latent_tokens_and_cross_attention_map():
    module = make_fusion("perceiver").eval()
    inputs = make_inputs()
    with torch.no_grad():
        out = module(inputs, return_attention=True)
    assert out.tokens.shape == (8, 4, 16) and out.mask.all()
    probs = out.attentions["latents->inputs/layer0"]
    valid = torch.cat([enc.mask & enc.present[:, None] for enc in inputs.values()], 1)
    assert probs.shape == (8, 2, 4, valid.shape[1])
    assert torch.all(probs.masked_select(~valid[:, None, None, :]) == 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(8, 2, 4))


def test_nothing_present_leaves_the_latents_input_free():
    module = make_fusion("perceiver").eval()
    nothing = torch.zeros(8, 3, dtype=torch.bool)
    with torch.no_grad():
        a = module(make_inputs(seed=0, presence=nothing)).pooled
        b = module(make_inputs(seed=1, presence=nothing)).pooled
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, a[:1].expand_as(a))

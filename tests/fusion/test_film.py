"""FiLMFusion: the conditioning modalities modulate the target's tokens."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from polyfuse.fusion import FiLMFusion

from .fusion_cases import DIMS, make_fusion, make_inputs


def test_tokens_follow_the_target_and_conditions_matter():
    module = make_fusion("film", target="audio").eval()
    inputs = make_inputs()
    with torch.no_grad():
        out = module(inputs)
        assert out.tokens.shape[1] == inputs["audio"].tokens.shape[1]
        changed = dict(inputs, text=replace(inputs["text"], tokens=torch.randn_like(inputs["text"].tokens)))
        other = module(changed)
    text_present = inputs["text"].present
    assert not torch.allclose(out.pooled[text_present], other.pooled[text_present])
    torch.testing.assert_close(out.pooled[~text_present], other.pooled[~text_present])


def test_zero_film_generator_is_the_identity_modulation():
    module = make_fusion("film").eval()
    with torch.no_grad():
        for block in module.blocks:
            block.film.weight.zero_()
            block.film.bias.zero_()
        inputs = make_inputs()
        other = dict(inputs, audio=replace(inputs["audio"], tokens=torch.randn_like(inputs["audio"].tokens)))
        torch.testing.assert_close(module(inputs).pooled, module(other).pooled)


def test_absent_target_becomes_one_missing_token():
    module = make_fusion("film").eval()
    with torch.no_grad():
        out = module(make_inputs())
    absent = ~make_inputs()["image"].present
    assert (out.mask[absent].sum(1) == 1).all() and out.mask[absent][:, 0].all()


def test_unknown_target_is_rejected():
    with pytest.raises(ValueError, match="target"):
        FiLMFusion(DIMS, 16, target="video")

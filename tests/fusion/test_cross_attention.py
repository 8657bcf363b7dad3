"""CrossAttentionFusion: the query modality attends to every other modality."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from polyfuse.fusion import CrossAttentionFusion

from .fusion_cases import DIMS, make_fusion, make_inputs


def test_maps_mask_padding_and_absent_contexts():
    module = make_fusion("cross_attention", query="text").eval()
    inputs = make_inputs()
    with torch.no_grad():
        out = module(inputs, return_attention=True)
    assert set(out.attentions) == {f"text->{m}/layer{i}" for m in ("image", "audio") for i in range(2)}
    for context in ("image", "audio"):
        probs = out.attentions[f"text->{context}/layer0"]  # (B, H, L_text, L_context)
        valid = inputs[context].mask & inputs[context].present[:, None]
        assert torch.all(probs.masked_select(~valid[:, None, None, :]) == 0), "padded keys get weight 0"
        absent = ~inputs[context].present
        assert torch.all(probs[absent] == 0), "rows attending to an absent modality are all zero"
        sums = probs[~absent].sum(-1)
        torch.testing.assert_close(sums, torch.ones_like(sums))
    assert out.tokens.shape[1] == inputs["text"].tokens.shape[1]


def test_absent_query_is_one_learned_token_that_reads_the_others():
    module = make_fusion("cross_attention").eval()  # query = image, absent for samples 2, 3, 5
    inputs = make_inputs()
    with torch.no_grad():
        out = module(inputs)
        changed = dict(inputs, audio=replace(inputs["audio"], tokens=inputs["audio"].tokens * 2))
        other = module(changed)
    assert torch.equal(out.mask[2], torch.tensor([True, False, False, False, False]))
    assert not torch.allclose(out.pooled[2], other.pooled[2])  # sample 2 has audio only


def test_contexts_are_averaged_over_present_modalities():
    """With a single present context, the result is as if the fusion had only that context."""
    module = make_fusion("cross_attention").eval()
    inputs = make_inputs()
    inputs["text"] = replace(inputs["text"], present=torch.zeros(8, dtype=torch.bool))
    with torch.no_grad():
        x = module.query_proj(inputs["image"].tokens[:1])
        update, _ = module.cross[0].attend["audio"](x, inputs["audio"].tokens[:1], inputs["audio"].mask[:1])
        expected = module.ffn[0](x + update)
        full, _ = module.cross[0](x, {m: (inputs[m].tokens[:1], inputs[m].mask[:1] & inputs[m].present[:1, None])
                                      for m in ("audio", "text")})
    torch.testing.assert_close(module.ffn[0](x + full), expected)


def test_unknown_query_is_rejected():
    with pytest.raises(ValueError, match="query"):
        CrossAttentionFusion(DIMS, 16, query="video")

"""EarlyFusion (single stream): [CLS] + every modality's tokens + learned [MISS_m] tokens."""

from __future__ import annotations

import torch

from fusion_cases import LENGTHS, make_fusion, make_inputs


def test_sequence_layout_and_missing_tokens():
    module = make_fusion("early").eval()
    inputs = make_inputs()
    with torch.no_grad():
        out = module(inputs, return_attention=True)
    expected_length = 1 + sum(length + 1 for length in LENGTHS.values())
    assert out.tokens.shape[1] == expected_length
    assert out.mask[:, 0].all()  # [CLS]
    offset = 1
    for name, enc in inputs.items():
        length = enc.tokens.shape[1]
        assert torch.equal(out.mask[:, offset:offset + length], enc.mask & enc.present[:, None])
        assert torch.equal(out.mask[:, offset + length], ~enc.present)  # [MISS_m] valid iff absent
        offset += length + 1
    probs = out.attentions["joint/layer0"]
    assert probs.shape == (8, 2, expected_length, expected_length)
    assert torch.all(probs[..., ~out.mask[0]][0] == 0)  # masked keys get no weight


def test_pooled_is_the_cls_pooler():
    module = make_fusion("early").eval()
    inputs = make_inputs()
    captured = {}
    module.norm.register_forward_hook(lambda mod, args, out: captured.update(x=out))
    with torch.no_grad():
        pooled = module(inputs).pooled
    torch.testing.assert_close(pooled, module.pooler(captured["x"][:, 0]))

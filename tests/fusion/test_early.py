"""EarlyFusion (single stream): [CLS] + every modality's tokens + learned [MISS_m] tokens."""

from __future__ import annotations

import pytest
import torch


from polyfuse.batch import Encoded
from polyfuse.fusion import EarlyFusion

from .fusion_cases import LENGTHS, make_fusion, make_inputs


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



def test_vilt_layout_has_no_own_tokens_or_projections():
    dims = {"text": 16, "image": 16}
    module = EarlyFusion(dims, 16, depth=1, heads=2, dropout=0.0, project=False, class_token=False,
                         missing_tokens=False, token_projection=False, eps=1e-12, mlp_hidden=24).eval()
    assert module.cls is None and module.missing is None and isinstance(module.out, torch.nn.Identity)
    text, image = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    text_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    with torch.no_grad():
        out = module({"text": Encoded(text, text_mask), "image": image})
    assert out.tokens.shape == (2, 12, 16) and torch.equal(out.mask[:, :5], text_mask)  # [text; image]
    torch.testing.assert_close(out.pooled, module.pooler(out.tokens[:, 0]))  # pooler on the first text token
    with pytest.raises(ValueError, match="project=False"):
        EarlyFusion({"text": 8, "image": 16}, 16, project=False)
    with pytest.raises(ValueError, match="token_projection=False"):
        EarlyFusion(dims, 8, width=16, token_projection=False)

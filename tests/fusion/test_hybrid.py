"""HybridFusion: early branch tokens/maps, pooled from both the early and the late branch."""

from __future__ import annotations

import torch

from .fusion_cases import make_fusion, make_inputs


def test_combines_early_and_late_branches():
    module = make_fusion("hybrid").eval()
    inputs = make_inputs()
    with torch.no_grad():
        out = module(inputs, return_attention=True)
        early = module.early(inputs, return_attention=True)
        late = module.late(inputs)
    assert torch.equal(out.tokens, early.tokens) and set(out.attentions) == set(early.attentions)
    torch.testing.assert_close(out.pooled, module.combine(torch.cat([early.pooled, late.pooled], -1)))

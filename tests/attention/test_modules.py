"""MultiHeadAttention: parity with torch.nn.MultiheadAttention on every trainable backend."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polyfuse.attention import MultiHeadAttention

from .params import TRITON


def _load_from_torch(ours: MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
    dim = ours.dim
    with torch.no_grad():
        for i, proj in enumerate((ours.q_proj, ours.k_proj, ours.v_proj)):
            proj.weight.copy_(theirs.in_proj_weight[i * dim:(i + 1) * dim])
            proj.bias.copy_(theirs.in_proj_bias[i * dim:(i + 1) * dim])
        ours.out_proj.weight.copy_(theirs.out_proj.weight)
        ours.out_proj.bias.copy_(theirs.out_proj.bias)


@pytest.mark.parametrize("backend", ["reference", "sdpa", TRITON, "auto"])
def test_cross_attention_matches_torch_multihead_attention(backend):
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(64, 4, batch_first=True)
    ours = MultiHeadAttention(64, 4, backend=backend)
    _load_from_torch(ours, theirs)
    image, text = torch.randn(2, 19, 64), torch.randn(2, 11, 64)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 6:] = False
    out, probs = ours(image, text, key_padding_mask=mask, need_weights=True)
    ref, ref_probs = theirs(image, text, text, key_padding_mask=~mask, average_attn_weights=False)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, ref_probs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", TRITON])
def test_every_parameter_gets_a_gradient(backend):
    torch.manual_seed(0)
    layer = MultiHeadAttention(32, 2, kv_dim=48, backend=backend)
    x, context = torch.randn(2, 9, 32), torch.randn(2, 7, 48)
    out, probs = layer(x, context, key_padding_mask=torch.rand(2, 7) > 0.3, causal=True)
    assert probs is None and out.shape == (2, 9, 32)
    out.square().sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name

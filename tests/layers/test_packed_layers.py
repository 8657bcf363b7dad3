"""Packed (varlen) execution of the shared layers equals the padded path on the real tokens."""

from __future__ import annotations

import pytest
import torch

from polyfuse.attention.varlen import Packing
from polyfuse.layers import MultiHeadAttention, TransformerBlock


@pytest.mark.parametrize("norm,causal", [("pre", False), ("post", False), ("pre", True)])
def test_block_packed_equals_padded(norm, causal):
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, norm=norm, causal=causal, backend="reference").eval()
    mask = torch.tensor([[True] * 5 + [False] * 2, [True] * 7, [True] * 2 + [False] * 5])
    x = torch.randn(3, 7, 16, requires_grad=True)
    padded, _ = block(x, key_padding_mask=mask)
    packing = Packing.from_mask(mask)
    packed, _ = block(packing.unpad(x), packing=packing)
    torch.testing.assert_close(packing.pad(packed), torch.where(mask[..., None], padded, 0.0), atol=1e-5, rtol=1e-5)
    grad_padded = torch.autograd.grad(padded[mask].square().sum(), x)[0]
    grad_packed = torch.autograd.grad(packed.square().sum(), x)[0]
    torch.testing.assert_close(grad_packed, grad_padded, atol=1e-5, rtol=1e-5)


def test_cross_attention_packed_equals_padded():
    torch.manual_seed(0)
    layer = MultiHeadAttention(16, 4, kv_dim=8, backend="sdpa").eval()
    q_mask = torch.tensor([[True] * 3 + [False], [True] * 4])
    k_mask = torch.tensor([[True] * 6, [True] * 2 + [False] * 4])
    x, ctx = torch.randn(2, 4, 16), torch.randn(2, 6, 8)
    padded, _ = layer(x, ctx, key_padding_mask=k_mask)
    qp, kp = Packing.from_mask(q_mask), Packing.from_mask(k_mask)
    packed, _ = layer(qp.unpad(x), kp.unpad(ctx), packing=qp, context_packing=kp)
    torch.testing.assert_close(packed, padded[q_mask], atol=1e-5, rtol=1e-5)

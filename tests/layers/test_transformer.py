"""TransformerBlock / MultiHeadAttention: maps as return values, backend read at build time, gradients."""

from __future__ import annotations

import pytest
import torch

import polyfuse.attention as api
from polyfuse.attention import attention, get_default_backend, using_backend
from polyfuse.layers import Mlp, MultiHeadAttention, TransformerBlock


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_block_returns_the_probabilities_of_its_attention(norm):
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, mlp_ratio=2.0, norm=norm, backend="reference").eval()
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    out, probs = block(x, mask)
    assert probs is None
    out_with, probs = block(x, mask, need_weights=True)
    torch.testing.assert_close(out_with, out)
    attn_input = block.norm1(x) if norm == "pre" else x
    split = lambda t: t.view(3, 5, 2, 8).transpose(1, 2)  # noqa: E731
    q, k, v = (split(proj(attn_input)) for proj in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj))
    _, expected = attention(q, k, v, mask, backend="reference", need_weights=True)
    torch.testing.assert_close(probs, expected)
    assert probs.shape == (3, 2, 5, 5) and not probs[1, :, :, 3:].any()


def test_backend_is_read_once_when_the_layer_is_built(monkeypatch):
    with using_backend("reference"):
        layer = MultiHeadAttention(8, 2)
        block = TransformerBlock(8, 2)
        with using_backend("sdpa"):  # later changes of the global default do not reach built layers
            assert layer.backend == "reference" and block.attn.backend == "reference"
            assert MultiHeadAttention(8, 2).backend == "sdpa"
        assert get_default_backend() == "reference"
    used = []
    real = api._run_backend
    monkeypatch.setattr(api, "_run_backend", lambda name, *a: used.append(name) or real(name, *a))
    block(torch.randn(2, 3, 8))
    assert used == ["reference"]


def test_unknown_backend_fails_when_built():
    with pytest.raises(ValueError, match="unknown attention backend 'flash'.*valid: reference, sdpa"):
        TransformerBlock(8, 2, backend="flash")


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    block = TransformerBlock(8, 2, layer_scale=0.1, backend="sdpa")
    mlp = Mlp(8, 16, activation="quick_gelu")
    out, _ = block(torch.randn(2, 4, 8), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool))
    mlp(out).sum().backward()
    for name, param in [*block.named_parameters(), *mlp.named_parameters()]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name

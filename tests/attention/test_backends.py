"""Every backend through :func:`polyfuse.attention.attention` against the fp32 reference.

Covers the issue's matrix on CPU: no mask, random padding, fully masked rows, Lq != Lk, causal,
several head dims, non-power-of-two lengths; forward and q/k/v gradients.
"""

from __future__ import annotations

import pytest
import torch

from polyfuse.attention import attention, available_backends, get_default_backend, set_default_backend

from .params import TRITON

TRAINABLE = ["reference", "sdpa", TRITON, "auto"]  # flex has no CPU backward (tested in test_flex.py)
CASES = {
    "self-nomask": ((2, 2, 16, 16, 32), False, False, ()),
    "self-padded": ((2, 2, 23, 23, 32), True, False, ()),
    "img->txt-padded": ((3, 2, 37, 11, 64), True, False, (2,)),
    "txt->img-causal": ((2, 2, 9, 30, 16), False, True, ()),
    "decoder-causal-padded": ((2, 1, 19, 19, 32), True, True, (0,)),
}


@pytest.mark.parametrize("backend", TRAINABLE)
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_backend_matches_reference(make_qkv, padding_mask, check_against_reference, backend, case):
    (batch, heads, lq, lk, head_dim), masked, causal, empty_rows = CASES[case]
    q, k, v = make_qkv(batch, heads, lq, lk, head_dim)
    mask = padding_mask(batch, lk, empty_rows=empty_rows) if masked else None
    out = attention(q, k, v, mask, causal=causal, backend=backend)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    check_against_reference(out, grads, q, k, v, mask, causal=causal, grad_out=grad_out)
    for row in empty_rows:
        assert torch.equal(out[row], torch.zeros_like(out[row]))
        assert torch.equal(grads[0][row], torch.zeros_like(grads[0][row]))


@pytest.mark.parametrize("backend", ["sdpa", TRITON])
def test_half_precision_matches_reference(make_qkv, padding_mask, check_against_reference, backend):
    q, k, v = make_qkv(2, 2, 21, 13, 32, dtype=torch.float16)
    mask = padding_mask(2, 13, empty_rows=(1,))
    out = attention(q, k, v, mask, backend=backend)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    check_against_reference(out, grads, q, k, v, mask, grad_out=grad_out)


@pytest.mark.parametrize("backend", TRAINABLE)
def test_key_lengths_equal_the_prefix_mask(make_qkv, backend):
    q, k, v = make_qkv(3, 2, 12, 20, 32)
    lengths = torch.tensor([20, 7, 0])
    mask = torch.arange(20)[None, :] < lengths[:, None]
    torch.testing.assert_close(attention(q, k, v, key_lengths=lengths, backend=backend),
                               attention(q, k, v, mask, backend="reference"), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend", ["reference", "sdpa", "flex", TRITON])
def test_need_weights_returns_the_reference_probabilities(make_qkv, padding_mask, backend):
    q, k, v = make_qkv(2, 2, 14, 17, 32)
    q, k, v = q.detach(), k.detach(), v.detach()
    mask = padding_mask(2, 17, empty_rows=(1,))
    out, probs = attention(q, k, v, mask, causal=True, backend=backend, need_weights=True)
    ref_out, ref_probs = attention(q, k, v, mask, causal=True, backend="reference", need_weights=True)
    assert probs.shape == (2, 2, 14, 17)
    torch.testing.assert_close(probs, ref_probs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=2e-5)
    assert torch.equal(probs[1], torch.zeros_like(probs[1]))


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_dropout_keeps_the_expectation_and_is_off_at_zero(make_qkv, backend):
    """Inverted dropout: averaging many draws recovers the no-dropout output. (The Triton kernels'
    dropout is checked exactly against their own keep mask in kernels/test_function.py.)"""
    q, k, v = make_qkv(1, 1, 16, 16, 16)
    q, k, v = q.detach(), k.detach(), v.detach()
    clean = attention(q, k, v, backend=backend)
    torch.manual_seed(0)
    draws = torch.stack([attention(q, k, v, dropout_p=0.2, backend=backend) for _ in range(200)])
    assert not torch.equal(draws[0], clean)
    torch.testing.assert_close(draws.mean(0), clean, atol=0.12, rtol=0.0)


def test_backend_names_are_validated():
    assert set(available_backends()) == {"reference", "sdpa", "flex", "triton", "auto"}
    previous = get_default_backend()
    try:
        for name in available_backends():
            set_default_backend(name)
            assert get_default_backend() == name
        with pytest.raises(ValueError, match="valid: reference, sdpa, flex, triton, auto"):
            set_default_backend("flash")
    finally:
        set_default_backend(previous)
    with pytest.raises(ValueError, match="unknown attention backend 'xformers'"):
        attention(*(torch.randn(1, 1, 4, 8) for _ in range(3)), backend="xformers")


def test_default_backend_is_used_when_none(make_qkv, monkeypatch):
    import polyfuse.attention as api

    calls = []
    monkeypatch.setattr(api, "reference_attention",
                        lambda *a, **kw: calls.append(1) or (torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 4, 4)))
    previous = get_default_backend()
    set_default_backend("reference")
    try:
        attention(*(torch.randn(1, 1, 4, 8) for _ in range(3)))
    finally:
        set_default_backend(previous)
    assert calls == [1]


def test_bad_inputs_are_explained():
    q = torch.randn(2, 2, 5, 8)
    with pytest.raises(TypeError, match="must be bool"):
        attention(q, q, q, torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"\(B, Lk\) = \(2, 5\)"):
        attention(q, q, q, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="not both"):
        attention(q, q, q, torch.ones(2, 5, dtype=torch.bool), key_lengths=torch.tensor([5, 5]))
    with pytest.raises(ValueError, match=r"\(B, H, L, D\)"):
        attention(q[0], q[0], q[0])

"""SDPA backend: mask conversion, NaN-free fully masked rows, pinning one SDPA backend."""

from __future__ import annotations

import pytest
import torch

from polyfuse.attention.args import AttentionArgs
from polyfuse.attention.reference import reference_attention
from polyfuse.attention.sdpa import sdpa_attention, sdpa_backend_names


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("backend", ["math", None], ids=["math", "default"])
def test_fully_masked_rows_are_zero_without_nan_gradients(make_qkv, padding_mask, causal, backend):
    """Rows with no key go through the guard (all keys allowed, output times zero): exact zeros, finite grads.

    (torch 2.14's CPU kernels already return zeros; CUDA memory-efficient kernels have returned NaN.)"""
    q, k, v = make_qkv(3, 2, 11, 9, 16)
    mask = padding_mask(3, 9, empty_rows=(0, 2))
    pinned = [sdpa_backend_names()[backend]] if backend else None
    out = sdpa_attention(AttentionArgs(q, k, v, mask, causal=causal), sdpa_backends=pinned)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    assert torch.equal(out[0], torch.zeros_like(out[0])) and torch.equal(out[2], torch.zeros_like(out[2]))
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.equal(grads[1][0], torch.zeros_like(grads[1][0]))
    expected, _ = reference_attention(AttentionArgs(q, k, v, mask, causal=causal))
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=2e-5)


def test_causal_with_unequal_lengths_is_aligned_to_the_end(make_qkv):
    """SDPA's own ``is_causal`` aligns to the start when Lq != Lk; ours must align to the end."""
    q, k, v = (t.detach() for t in make_qkv(1, 1, 4, 10, 16))
    out = sdpa_attention(AttentionArgs(q, k, v, causal=True))
    torch.testing.assert_close(out, reference_attention(AttentionArgs(q, k, v, causal=True))[0], atol=2e-5, rtol=2e-5)
    # the last query sees every key
    full = torch.softmax(q[..., -1:, :] @ k.transpose(-1, -2) / 4.0, -1) @ v
    torch.testing.assert_close(out[..., -1:, :], full, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend", ["math", None], ids=["math", "default"])
def test_causal_with_more_queries_than_keys_and_no_mask(make_qkv, backend):
    """Causal Lq > Lk without a padding mask: the first Lq - Lk rows see no key and give zeros (the
    causal-only mask is (Lq, Lk), without batch dims)."""
    q, k, v = make_qkv(2, 2, 7, 3, 16)
    pinned = [sdpa_backend_names()[backend]] if backend else None
    out = sdpa_attention(AttentionArgs(q, k, v, causal=True), sdpa_backends=pinned)
    expected, _ = reference_attention(AttentionArgs(q, k, v, causal=True))
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=2e-5)
    assert torch.equal(out[:, :, :4], torch.zeros_like(out[:, :, :4]))
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    assert torch.equal(grads[0][:, :, :4], torch.zeros_like(grads[0][:, :, :4]))

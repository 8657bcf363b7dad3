"""AttentionArgs: the one argument type of every backend."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from polyfuse.attention import AttentionArgs, attention
from polyfuse.attention.reference import reference_attention
from polyfuse.attention.sdpa import sdpa_attention


def test_lengths_become_the_mask_backends_take():
    q, k = torch.randn(2, 1, 3, 4), torch.randn(2, 1, 5, 4)
    args = AttentionArgs(q, k, k, key_lengths=torch.tensor([5, 2]))
    expected = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    assert args.has_mask and torch.equal(args.padding_mask(), expected)
    masked = args.with_mask()
    assert masked.key_lengths is None and torch.equal(masked.key_padding_mask, expected)
    assert AttentionArgs(q, k, k).with_mask().key_padding_mask is None
    assert args.softmax_scale == 0.5 and AttentionArgs(q, k, k, scale=0.1).softmax_scale == 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.causal = True  # type: ignore[misc]


def test_public_call_and_backends_agree_on_the_same_arguments():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 2, 4, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    lengths = torch.tensor([6, 3])
    args = AttentionArgs(q, k, v, key_lengths=lengths, causal=True, scale=0.3)
    ref, _ = reference_attention(args)
    torch.testing.assert_close(sdpa_attention(args), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention(q, k, v, key_lengths=lengths, causal=True, scale=0.3, backend="sdpa"), ref,
                               atol=1e-5, rtol=1e-5)

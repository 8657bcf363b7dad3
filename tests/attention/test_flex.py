"""FlexAttention backend: block mask from the padding mask, parity, and its documented CPU limits."""

from __future__ import annotations

import pytest
import torch

from polyfuse.attention.flex import flex_padded_attention, padding_block_mask
from polyfuse.attention.args import AttentionArgs
from polyfuse.attention.reference import reference_attention


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_eager_flex_matches_reference(make_qkv, padding_mask, causal):
    q, k, v = (t.detach() for t in make_qkv(3, 2, 21, 13, 32))
    mask = padding_mask(3, 13, empty_rows=(1,))
    out, lse = flex_padded_attention(AttentionArgs(q, k, v, mask, causal=causal), compiled=False, return_lse=True)
    ref, _ = reference_attention(AttentionArgs(q, k, v, mask, causal=causal))
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    allowed = mask[:, None, None, :] & (torch.ones(21, 13, dtype=torch.bool).tril(-8) if causal else True)
    scores = (q @ k.transpose(-1, -2) * 32**-0.5).masked_fill(~allowed, float("-inf"))
    real = [0, 2]  # sample 1 has no key: its lse belongs to the all-keys stand-in
    torch.testing.assert_close(lse[real], torch.logsumexp(scores, -1)[real], atol=1e-5, rtol=1e-5)  # natural log


def test_compiled_flex_matches_reference_on_cpu(make_qkv, padding_mask):
    """The fused (compiled) CPU kernel: inference only."""
    q, k, v = (t.detach() for t in make_qkv(2, 2, 24, 40, 32))
    mask = padding_mask(2, 40, empty_rows=(0,))
    out, lse = flex_padded_attention(AttentionArgs(q, k, v, mask), return_lse=True)
    assert lse is None  # compiled CPU flex cannot return it
    torch.testing.assert_close(out, reference_attention(AttentionArgs(q, k, v, mask))[0], atol=2e-5, rtol=2e-5)


def test_block_mask_skips_padding_blocks():
    """A sample whose keys past 128 are padding has one key block instead of two."""
    mask = torch.ones(2, 256, dtype=torch.bool)
    mask[1, 100:] = False
    block_mask = padding_block_mask(mask, 128, 256, causal=False, device=torch.device("cpu"))
    total = block_mask.kv_num_blocks + (block_mask.full_kv_num_blocks if block_mask.full_kv_num_blocks is not None else 0)
    assert total[0, 0, 0].item() == 2 and total[1, 0, 0].item() == 1


def test_cpu_limits_are_explained(make_qkv):
    q, k, v = make_qkv(1, 1, 8, 8, 16)
    with pytest.raises(NotImplementedError, match="no backward on CPU"):
        flex_padded_attention(AttentionArgs(q, k, v))
    with pytest.raises(ValueError, match="no dropout"):
        flex_padded_attention(AttentionArgs(q.detach(), k.detach(), v.detach(), dropout_p=0.1))

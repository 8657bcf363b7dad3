"""Attention maps rebuilt from the log-sum-exp equal the explicit softmax."""

from __future__ import annotations

import torch

from polyfuse.attention.args import AttentionArgs
from polyfuse.attention.reference import reference_attention
from polyfuse.attention.weights import probabilities_from_lse


def test_probabilities_from_lse_match_softmax_and_mask_rows(make_qkv, padding_mask):
    q, k, _ = (t.detach() for t in make_qkv(2, 3, 10, 13, 16))
    mask = padding_mask(2, 13, empty_rows=(1,))
    # huge scores on padded keys: masking after exp() would overflow to inf * 0 = NaN
    k = k + 50.0 * (~mask)[:, None, :, None]
    _, ref_probs = reference_attention(AttentionArgs(q, k, k, mask, causal=True, scale=0.5))
    allowed = mask[:, None, None, :] & torch.ones(10, 13, dtype=torch.bool).tril(3)
    scores = (q @ k.transpose(-1, -2) * 0.5).masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(scores, -1)  # -inf on rows without keys (the flex convention)
    lse_pos = torch.where(torch.isinf(lse), torch.full_like(lse, float("inf")), lse)  # the triton convention
    for saved in (lse, lse_pos):
        probs = probabilities_from_lse(q, k, saved, mask, causal=True, scale=0.5)
        assert torch.isfinite(probs).all()
        torch.testing.assert_close(probs, ref_probs, atol=1e-6, rtol=1e-5)
    assert torch.equal(probs[1], torch.zeros_like(probs[1]))

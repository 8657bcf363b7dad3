"""The oracle itself: equals SDPA's math on rows with keys, zeros elsewhere, ignores padded keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from polyfuse.attention.args import AttentionArgs
from polyfuse.attention.reference import reference_attention


def test_reference_equals_explicit_softmax_attention(make_qkv, padding_mask):
    q, k, v = (t.detach() for t in make_qkv(2, 2, 7, 9, 16))
    mask = padding_mask(2, 9)
    out, probs = reference_attention(AttentionArgs(q, k, v, mask))
    double = [t.double() for t in (q, k, v)]
    expected = F.scaled_dot_product_attention(*double, attn_mask=mask[:, None, None, :])
    torch.testing.assert_close(out.double(), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 7))
    assert (probs * ~mask[:, None, None, :]).abs().max() == 0


def test_padded_keys_are_ignored_and_empty_rows_are_zero(make_qkv, padding_mask):
    q, k, v = (t.detach() for t in make_qkv(2, 2, 7, 9, 16))
    mask = padding_mask(2, 9, empty_rows=(1,))
    out, _ = reference_attention(AttentionArgs(q, k, v, mask))
    noise = 1e3 * torch.randn_like(k) * (~mask)[:, None, :, None]
    out2, probs2 = reference_attention(AttentionArgs(q, k + noise, v + noise, mask))
    torch.testing.assert_close(out2, out)
    assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.equal(probs2[1], torch.zeros_like(probs2[1]))

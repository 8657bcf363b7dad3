"""The packed (cu_seqlens) attention call and :class:`Packing`: equal to attention run sample by sample."""

from __future__ import annotations

import pytest
import torch

from polyfuse.attention import attention
from polyfuse.attention.varlen import Packing, cu_seqlens_from_lengths


def _per_sample_oracle(q, k, v, cu_q, cu_k, causal):
    outs = []
    for b in range(len(cu_q) - 1):
        qs = q[cu_q[b]:cu_q[b + 1]].transpose(0, 1)[None]
        ks, vs = (t[cu_k[b]:cu_k[b + 1]].transpose(0, 1)[None] for t in (k, v))
        if qs.shape[2] == 0:
            continue
        if ks.shape[2] == 0:
            outs.append(torch.zeros_like(qs[0].transpose(0, 1)))
            continue
        outs.append(attention(qs, ks, vs, causal=causal, backend="reference")[0].transpose(0, 1))
    return torch.cat(outs)


@pytest.mark.parametrize("backend", ["reference", "sdpa", "flex", "auto"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_packed_call_equals_each_sample_alone(backend, causal, cross):
    torch.manual_seed(0)
    lengths_q = torch.tensor([5, 0, 3, 7]) if not cross else torch.tensor([2, 4, 1, 6])
    lengths_k = lengths_q if not cross else torch.tensor([6, 4, 0, 9])
    if cross and causal:
        lengths_k = torch.tensor([6, 4, 3, 9])  # causal needs a key per query to be defined the same everywhere
    cu_q, cu_k = cu_seqlens_from_lengths(lengths_q), cu_seqlens_from_lengths(lengths_k)
    trainable = backend != "flex"  # flex has no backward on CPU (tests/attention/test_flex.py)
    q = torch.randn(int(lengths_q.sum()), 2, 8, requires_grad=trainable)
    k = torch.randn(int(lengths_k.sum()), 2, 8, requires_grad=trainable)
    v = torch.randn(int(lengths_k.sum()), 2, 8, requires_grad=trainable)
    out = attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=causal, backend=backend)
    expected = _per_sample_oracle(q, k, v, cu_q.tolist(), cu_k.tolist(), causal)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if not trainable:
        return
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_packing_round_trip_positions_and_errors():
    mask = torch.tensor([[True, True, False], [False, False, False], [True, True, True]])
    packing = Packing.from_mask(mask, name="text")
    assert packing.cu_seqlens.tolist() == [0, 2, 2, 5] and packing.max_seqlen == 3
    x = torch.arange(9.0).view(3, 3, 1)
    packed = packing.unpad(x)
    assert packed.squeeze(1).tolist() == [0.0, 1.0, 6.0, 7.0, 8.0]
    back = packing.pad(packed)
    assert torch.equal(back, torch.where(mask[..., None], x, torch.zeros(())))
    assert packing.position_ids().tolist() == [0, 1, 0, 1, 2]
    assert packing.sequence_ids().tolist() == [0, 0, 2, 2, 2]
    with pytest.raises(ValueError, match="text: sample 1's mask is not a prefix"):
        Packing.from_mask(torch.tensor([[True, False], [False, True]]), name="text")


def test_bad_cu_seqlens_are_named():
    q = torch.randn(5, 2, 8)
    with pytest.raises(ValueError, match="cu_seqlens_q must start at 0 and end at the 5 packed tokens"):
        attention(q, q, q, cu_seqlens_q=torch.tensor([0, 2, 4], dtype=torch.int32))
    with pytest.raises(ValueError, match="cu_seqlens_k decreases at sample 1"):
        attention(q, q, q, cu_seqlens_q=torch.tensor([0, 5], dtype=torch.int32),
                  cu_seqlens_k=torch.tensor([0, 6, 5], dtype=torch.int32))
    with pytest.raises(ValueError, match="takes no key_padding_mask"):
        attention(q, q, q, torch.ones(1, 5, dtype=torch.bool), cu_seqlens_q=torch.tensor([0, 5]))

"""FlexAttention's native packed path: one sequence under a document (block-diagonal) mask.

Forward only: flex has no CPU backward in torch 2.14 (tests/attention/test_flex.py). The compiled CPU
kernel runs through ``attention(..., backend="flex")`` in test_varlen_api.py; here the eager path.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask

from polyfuse.attention import attention, varlen_dispatch
from polyfuse.attention.flex import document_mask_mod, flex_varlen_attention
from polyfuse.attention.varlen import cu_seqlens_from_lengths

from .test_varlen_api import _per_sample_oracle

CASES = {"self": ([5, 0, 19, 16], [5, 0, 19, 16]), "cross": ([2, 4, 21, 6], [17, 0, 3, 9])}


def _packed(lengths_q, lengths_k, heads=2, head_dim=8):
    gen = torch.Generator().manual_seed(0)
    cu_q, cu_k = cu_seqlens_from_lengths(torch.tensor(lengths_q)), cu_seqlens_from_lengths(torch.tensor(lengths_k))
    q = torch.randn(sum(lengths_q), heads, head_dim, generator=gen)
    k, v = (torch.randn(sum(lengths_k), heads, head_dim, generator=gen) for _ in range(2))
    return q, k, v, cu_q, cu_k


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_document_mask_equals_each_sample_alone(case, causal):
    q, k, v, cu_q, cu_k = _packed(*CASES[case])
    args = varlen_dispatch.packed_args(q, k, v, cu_q, cu_k, None, None, causal=causal, dropout_p=0.0, scale=None)
    out = flex_varlen_attention(args, compiled=False)
    expected = _per_sample_oracle(q, k, v, cu_q.tolist(), cu_k.tolist(), causal)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if case == "cross":  # sample 1 has no key: zeros, not NaN
        assert torch.equal(out[2:6], torch.zeros_like(out[2:6]))


def test_block_mask_skips_other_samples_blocks():
    """Two samples of 128 tokens packed into 256: each query block reads one key block, not two."""
    cu = torch.tensor([0, 128, 256], dtype=torch.int32)
    block_mask = create_block_mask(document_mask_mod(cu, cu, causal=False), None, None, 256, 256, device="cpu")
    total = block_mask.kv_num_blocks + (block_mask.full_kv_num_blocks if block_mask.full_kv_num_blocks is not None else 0)
    assert total[0, 0].tolist() == [1, 1]


def test_packed_flex_runs_natively_and_explains_its_cpu_limits(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the packed flex call was padded")

    monkeypatch.setattr(varlen_dispatch, "padded_fallback", refuse)
    monkeypatch.setattr("polyfuse.attention.flex._compiled_flex", lambda device_type: _eager_flex)
    q, k, v, cu_q, cu_k = _packed([3, 5], [4, 4])
    out = attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, backend="flex")
    torch.testing.assert_close(out, _per_sample_oracle(q, k, v, cu_q.tolist(), cu_k.tolist(), False),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no dropout"):
        attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, backend="flex", dropout_p=0.1)
    with pytest.raises(NotImplementedError, match="no backward on CPU"):
        attention(q.requires_grad_(), k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, backend="flex")


def _eager_flex(*args, **kwargs):
    import warnings

    from torch.nn.attention.flex_attention import flex_attention

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return flex_attention(*args, **kwargs)

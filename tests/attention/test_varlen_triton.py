"""The Triton kernels on packed (varlen) sequences, in Triton's CPU interpreter, against attention run
sample by sample with the fp32 reference (forward and q/k/v gradients)."""

from __future__ import annotations

import pytest
import torch

from polyfuse.attention import attention
from polyfuse.attention.varlen import cu_seqlens_from_lengths

from .params import INTERPRETING
from .test_varlen_api import _per_sample_oracle

kernels = pytest.importorskip("polyfuse.attention.kernels")
from polyfuse.attention.kernels import dropout_keep_mask  # noqa: E402
from polyfuse.attention.kernels import varlen as varlen_kernels  # noqa: E402

pytestmark = pytest.mark.skipif(not INTERPRETING, reason="CPU parity runs the kernels in Triton's interpreter "
                                "(TRITON_INTERPRET=1); on a GPU see tests/attention/test_gpu.py")
TOLERANCES = {torch.float32: (2e-5, 5e-5), torch.float16: (3e-3, 1e-2), torch.bfloat16: (2e-2, 6e-2)}


def _packed(lengths_q, lengths_k, heads=2, head_dim=16, dtype=torch.float32, seed=0):
    """Leaf ``q (Tq, H, D), k, v (Tk, H, D)`` and their ``cu_seqlens``."""
    gen = torch.Generator().manual_seed(seed)
    cu_q, cu_k = cu_seqlens_from_lengths(torch.tensor(lengths_q)), cu_seqlens_from_lengths(torch.tensor(lengths_k))
    shapes = [(sum(lengths_q), heads, head_dim), (sum(lengths_k), heads, head_dim), (sum(lengths_k), heads, head_dim)]
    q, k, v = (torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in shapes)
    return q, k, v, cu_q, cu_k


def _check(q, k, v, cu_q, cu_k, causal, **kwargs):
    """Output and gradients of the packed Triton call equal the per-sample fp32 reference."""
    out = attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=causal, backend="triton", **kwargs)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.dtype)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
    expected = _per_sample_oracle(*leaves, cu_q.tolist(), cu_k.tolist(), causal)
    expected_grads = torch.autograd.grad(expected, leaves, grad_out.float())
    out_tol, grad_tol = TOLERANCES[q.dtype]
    assert out.dtype == q.dtype and out.shape == q.shape
    torch.testing.assert_close(out.float(), expected, atol=out_tol, rtol=out_tol)
    for name, got, want in zip("qkv", grads, expected_grads):
        assert torch.isfinite(got).all(), f"d{name} has NaN/inf"
        torch.testing.assert_close(got.float(), want, atol=grad_tol, rtol=grad_tol, msg=lambda m: f"d{name}: {m}")
    return out, grads


# (query lengths, key lengths): samples crossing the 16-row interpreter tile, an absent query sample, a
# sample without keys, and causal samples with Lq > Lk (early rows see no key) and Lq < Lk.
CASES = {
    "self": ([5, 0, 19, 16], [5, 0, 19, 16]),
    "cross": ([2, 4, 21, 6], [17, 0, 3, 9]),
}


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_packed_triton_matches_each_sample_alone(case, causal):
    lengths_q, lengths_k = CASES[case]
    _check(*_packed(lengths_q, lengths_k), causal=causal)


def test_sample_without_keys_gives_zeros_and_zero_gradients():
    q, k, v, cu_q, cu_k = _packed([3, 4, 2], [5, 0, 6])
    out, (dq, dk, dv) = _check(q, k, v, cu_q, cu_k, causal=False)
    assert torch.equal(out[3:7], torch.zeros_like(out[3:7]))
    assert torch.equal(dq[3:7], torch.zeros_like(dq[3:7]))
    _, lse = varlen_kernels.triton_varlen_attention(_args(q, k, v, cu_q, cu_k))
    assert lse.shape == (2, 9) and torch.isinf(lse[:, 3:7]).all() and torch.isfinite(lse[:, :3]).all()


def test_a_larger_max_seqlen_only_adds_idle_blocks():
    """The grid is sized by max_seqlen; blocks past every sample's end do nothing."""
    q, k, v, cu_q, cu_k = _packed([7, 12], [9, 3])
    _check(q, k, v, cu_q, cu_k, causal=True, max_seqlen_q=40, max_seqlen_k=33)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision(dtype):
    _check(*_packed([9, 18], [20, 5], head_dim=32, dtype=dtype), causal=True)


def _args(q, k, v, cu_q, cu_k, **kwargs):
    from polyfuse.attention.varlen_dispatch import packed_args

    return packed_args(q, k, v, cu_q, cu_k, None, None, causal=kwargs.pop("causal", False),
                       dropout_p=kwargs.pop("dropout_p", 0.0), scale=kwargs.pop("scale", None))


def test_dropout_uses_the_padded_keep_mask_per_sample():
    """Sample b's keep bits are the top-left (Lq_b, Lk_b) corner of the padded (B, H, maxq, maxk) mask."""
    q, k, v, cu_q, cu_k = _packed([6, 17], [11, 4])
    p, scale = 0.3, 16**-0.5
    out, lse, seed = torch.ops.polyfuse.flash_attention_varlen_forward(q, k, v, cu_q, cu_k, 17, 11, True, p, scale)
    keep = dropout_keep_mask(seed, 2, 2, 17, 11, p)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    rows = []
    for b, ((q0, q1), (k0, k1)) in enumerate(zip(zip(cu_q[:-1], cu_q[1:]), zip(cu_k[:-1], cu_k[1:]))):
        qs, ks, vs = (t[lo:hi].transpose(0, 1) for t, (lo, hi) in zip(leaves, [(q0, q1), (k0, k1), (k0, k1)]))
        allowed = torch.ones(qs.shape[1], ks.shape[1], dtype=torch.bool).tril(ks.shape[1] - qs.shape[1])
        probs = torch.softmax((qs @ ks.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf")), -1)
        dropped = probs.nan_to_num(0.0) * keep[b, :, : qs.shape[1], : ks.shape[1]] / (1 - p)
        rows.append((dropped @ vs).transpose(0, 1))
    expected = torch.cat(rows)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grad_out = torch.randn_like(out)
    expected_grads = torch.autograd.grad(expected, leaves, grad_out)
    grads = torch.ops.polyfuse.flash_attention_varlen_backward(grad_out, q, k, v, out, lse, seed, cu_q, cu_k, 17, 11,
                                                               True, p, scale)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_bad_offsets_are_refused_before_any_launch(monkeypatch):
    """The kernels index memory with cu_seqlens: bad offsets must never reach them."""
    launches = []
    monkeypatch.setattr(varlen_kernels, "launch_forward", lambda *a, **kw: launches.append(1))
    q = torch.randn(6, 2, 16)
    cases = {
        "cu_seqlens_q must start at 0 and end at the 6 packed tokens": dict(cu_seqlens_q=torch.tensor([0, 2, 9])),
        "cu_seqlens_q decreases at sample 1": dict(cu_seqlens_q=torch.tensor([0, 7, 6])),
        r"cu_seqlens_k must be \(B \+ 1,\) int32": dict(cu_seqlens_q=torch.tensor([0, 6]),
                                                      cu_seqlens_k=torch.tensor([0.0, 6.0])),
        "cu_seqlens_q must be .* int32 .* torch.bool": dict(cu_seqlens_q=torch.tensor([False, True])),
        r"max_seqlen_q=3 is shorter than sample 1 \(4 tokens\)": dict(cu_seqlens_q=torch.tensor([0, 2, 6]),
                                                                   max_seqlen_q=3),
        "cu_seqlens_q has 2 samples, cu_seqlens_k 1": dict(cu_seqlens_q=torch.tensor([0, 2, 6]),
                                                         cu_seqlens_k=torch.tensor([0, 6])),
    }
    for message, offsets in cases.items():
        with pytest.raises(ValueError, match=message):
            attention(q, q, q, backend="triton", **offsets)
    assert launches == []


def test_int64_offsets_are_accepted():
    q, k, v, cu_q, cu_k = _packed([3, 5], [4, 2])
    _check(q, k, v, cu_q.long(), cu_k.long(), causal=False)


def test_traces_under_torch_compile_without_graph_breaks():
    """The varlen custom ops keep ``torch.compile(fullgraph=True)`` whole, backward included (aot_eager)."""
    q, k, v, cu_q, cu_k = _packed([5, 9], [7, 3])

    def block(q, k, v):
        out, _ = kernels.FlashAttentionFunction.apply(q * 1.0, k, v, None, None, True, 0.0, 0.25, cu_q, cu_k, 9, 7)
        return out.sum(-1)

    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    out = compiled(q, k, v)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    eager = block(q, k, v)
    eager_grads = torch.autograd.grad(eager.sum(), (q, k, v))
    torch.testing.assert_close(out, eager)
    for got, want in zip(grads, eager_grads):
        torch.testing.assert_close(got, want)


def test_custom_ops_pass_opcheck():
    q, k, v, cu_q, cu_k = (t.detach() for t in _packed([5, 9], [7, 3]))
    args = (q, k, v, cu_q, cu_k, 9, 7, False, 0.0, 0.25)
    torch.library.opcheck(torch.ops.polyfuse.flash_attention_varlen_forward.default, args,
                          test_utils=("test_schema", "test_faketensor"))
    out, lse, seed = torch.ops.polyfuse.flash_attention_varlen_forward(*args)
    torch.library.opcheck(torch.ops.polyfuse.flash_attention_varlen_backward.default,
                          (torch.ones_like(out), q, k, v, out, lse, seed, cu_q, cu_k, 9, 7, False, 0.0, 0.25),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_many_samples_with_head_dim_64(causal):
    lengths_q = [1, 33, 0, 47, 12, 64, 5, 29]
    lengths_k = [40, 33, 8, 0, 70, 64, 5, 3]
    _check(*_packed(lengths_q, lengths_k, heads=3, head_dim=64, seed=3), causal=causal)


def test_packed_triton_runs_natively_not_through_the_padded_fallback(monkeypatch):
    from polyfuse.attention import varlen_dispatch

    def refuse(*args, **kwargs):
        raise AssertionError("the packed Triton call was padded")

    monkeypatch.setattr(varlen_dispatch, "padded_fallback", refuse)
    q, k, v, cu_q, cu_k = _packed([4, 6], [4, 6])
    out = attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=True, backend="triton")
    assert out.shape == q.shape


@pytest.mark.parametrize("lengths", [([0, 0], [3, 2]), ([2, 1], [0, 0])], ids=["no-queries", "no-keys"])
def test_a_batch_without_queries_or_keys(lengths):
    q, k, v, cu_q, cu_k = _packed(*lengths)
    out = attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, backend="triton")
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert out.shape == q.shape and torch.equal(out, torch.zeros_like(out))
    assert all(torch.equal(grad, torch.zeros_like(grad)) for grad in grads)

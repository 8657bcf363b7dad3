"""The fused Triton attention (forward + backward kernels through the autograd Function) against the
fp32 reference, run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, see ``tests/attention/conftest.py``)."""

from __future__ import annotations

import pytest
import torch

kernels = pytest.importorskip("polyfuse.attention.kernels")
from polyfuse.attention.kernels import dropout_keep_mask, triton_attention  # noqa: E402
from polyfuse.attention.masks import allowed_mask  # noqa: E402

pytestmark = pytest.mark.skipif(not kernels.interpreting(), reason="CPU parity runs the kernels in Triton's "
                                "interpreter (TRITON_INTERPRET=1); on a GPU see tests/attention/test_gpu.py")


def _run(q, k, v, mask=None, key_lengths=None, **kwargs):
    out, lse = triton_attention(q, k, v, mask, key_lengths, **kwargs)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.dtype)
    return out, lse, torch.autograd.grad(out, (q, k, v), grad_out), grad_out


# (B, H, Lq, Lk, D): self-attention, image->text cross (Lq > Lk), text->image (Lq < Lk), odd lengths.
SHAPES = [(2, 2, 24, 24, 32), (2, 1, 37, 13, 64), (1, 2, 9, 41, 32), (2, 2, 33, 17, 16), (1, 1, 19, 23, 128)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "padded"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_matches_reference_fp32(make_qkv, padding_mask, check_against_reference, shape, masked, causal):
    batch, heads, lq, lk, head_dim = shape
    q, k, v = make_qkv(batch, heads, lq, lk, head_dim)
    mask = padding_mask(batch, lk) if masked else None
    out, _, grads, grad_out = _run(q, k, v, mask, causal=causal)
    check_against_reference(out, grads, q, k, v, mask, causal=causal, grad_out=grad_out)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_matches_reference_half(make_qkv, padding_mask, check_against_reference, dtype, causal):
    """fp16 runs natively in the interpreter; bf16 dots are upcast there (see ``tile_dot``)."""
    q, k, v = make_qkv(2, 2, 29, 21, 64, dtype=dtype)
    mask = padding_mask(2, 21)
    out, _, grads, grad_out = _run(q, k, v, mask, causal=causal)
    check_against_reference(out, grads, q, k, v, mask, causal=causal, grad_out=grad_out)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_fully_masked_rows_give_zero_output_and_gradients(make_qkv, padding_mask, check_against_reference, causal):
    q, k, v = make_qkv(3, 2, 20, 18, 32)
    mask = padding_mask(3, 18, empty_rows=(1,))
    out, lse, grads, grad_out = _run(q, k, v, mask, causal=causal)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.isinf(lse[1]).all() and (lse[1] > 0).all()
    assert torch.equal(grads[0][1], torch.zeros_like(grads[0][1]))
    assert torch.equal(grads[1][1], torch.zeros_like(grads[1][1]))
    check_against_reference(out, grads, q, k, v, mask, causal=causal, grad_out=grad_out)


def test_causal_with_more_queries_than_keys_zeroes_early_rows(make_qkv, check_against_reference):
    """Aligned to the end: with Lq=20, Lk=12 queries 0..7 see no key."""
    q, k, v = make_qkv(1, 2, 20, 12, 32)
    out, _, grads, grad_out = _run(q, k, v, causal=True)
    assert torch.equal(out[:, :, :8], torch.zeros_like(out[:, :, :8]))
    check_against_reference(out, grads, q, k, v, None, causal=True, grad_out=grad_out)


def test_key_lengths_equal_prefix_mask(make_qkv, check_against_reference):
    q, k, v = make_qkv(3, 2, 17, 26, 32)
    lengths = torch.tensor([26, 5, 0])
    out, _, grads, grad_out = _run(q, k, v, key_lengths=lengths)
    check_against_reference(out, grads, q, k, v, None, key_lengths=lengths, grad_out=grad_out)
    assert grads[1][0, :, 5:].abs().sum() > 0  # sample 0 has all 26 keys
    assert torch.equal(grads[1][1, :, 5:], torch.zeros_like(grads[1][1, :, 5:]))


def test_padded_keys_do_not_change_anything(make_qkv, padding_mask):
    """Mask invariance: rewriting padded keys/values changes neither output nor dq."""
    q, k, v = make_qkv(2, 2, 21, 19, 32)
    mask = padding_mask(2, 19)
    out, _, grads, grad_out = _run(q, k, v, mask)
    noise = torch.randn_like(k) * 100 * (~mask)[:, None, :, None]
    k2, v2 = (k + noise).detach().requires_grad_(), (v - noise).detach().requires_grad_()
    q2 = q.detach().requires_grad_()
    out2, _ = triton_attention(q2, k2, v2, mask)
    (dq2,) = torch.autograd.grad(out2, (q2,), grad_out)
    torch.testing.assert_close(out2, out, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(dq2, grads[0], atol=1e-6, rtol=1e-6)


def test_lse_is_logsumexp_of_allowed_scores(make_qkv, padding_mask):
    q, k, v = make_qkv(2, 2, 15, 22, 32)
    mask = padding_mask(2, 22)
    _, lse = triton_attention(q, k, v, mask, causal=True, scale=0.3)
    scores = (q @ k.transpose(-1, -2) * 0.3).masked_fill(~allowed_mask(mask, 15, 22, causal=True, device=q.device),
                                                          float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(scores, -1).detach(), atol=1e-5, rtol=1e-5)


def test_non_contiguous_inputs(make_qkv, padding_mask, check_against_reference):
    """(B, L, H, D) storage viewed as (B, H, L, D), as MultiHeadAttention produces."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, length, 3, 32, generator=gen).transpose(1, 2).requires_grad_() for length in (16, 18, 18))
    assert not q.is_contiguous() and q.shape == (2, 3, 16, 32)
    mask = padding_mask(2, 18)
    out, _, grads, grad_out = _run(q, k, v, mask)
    check_against_reference(out, grads, q, k, v, mask, grad_out=grad_out)


def test_dropout_matches_reference_with_the_same_keep_mask(make_qkv, padding_mask):
    q, k, v = make_qkv(2, 3, 21, 19, 32)
    mask, p = padding_mask(2, 19), 0.3
    out, lse, seed = torch.ops.polyfuse.flash_attention_forward(q, k, v, mask, None, True, p, 32**-0.5)
    keep = dropout_keep_mask(seed, 2, 3, 21, 19, p)
    assert 0.55 < keep.float().mean() < 0.85
    scores = (q @ k.transpose(-1, -2) * 32**-0.5).masked_fill(~allowed_mask(mask, 21, 19, causal=True, device="cpu"),
                                                               float("-inf"))
    ref = (torch.softmax(scores, -1).nan_to_num(0.0) * keep / (1 - p)) @ v  # causal: rows 0-1 see no key
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out)
    grads = torch.ops.polyfuse.flash_attention_backward(grad_out, q, k, v, out, lse, seed, mask, None, True, p,
                                                         32**-0.5)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-5)


def test_dropout_is_seeded_by_torch_rng(make_qkv):
    q, k, v = make_qkv(1, 2, 16, 16, 32)
    torch.manual_seed(3)
    first, _ = triton_attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(3)
    again, _ = triton_attention(q, k, v, dropout_p=0.5)
    other, _ = triton_attention(q, k, v, dropout_p=0.5)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_rejects_unsupported_inputs(make_qkv):
    q, k, v = make_qkv(1, 1, 8, 8, 32)
    with pytest.raises(ValueError, match="float16, bfloat16 or float32"):
        triton_attention(q.double(), k.double(), v.double())
    with pytest.raises(ValueError, match="head dims"):
        triton_attention(*(torch.randn(1, 1, 8, 320) for _ in range(3)))


def test_traces_under_torch_compile_without_graph_breaks(make_qkv, padding_mask):
    """The custom ops keep ``torch.compile(fullgraph=True)`` whole; aot_eager also traces the backward."""
    q, k, v = make_qkv(2, 2, 18, 13, 32)
    mask = padding_mask(2, 13)

    def block(q, k, v, mask):
        out, _ = triton_attention(q * 1.0, k, v, mask, causal=True)
        return out.sum(dim=-1)

    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    out = compiled(q, k, v, mask)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    eager_out = block(q, k, v, mask)
    eager_grads = torch.autograd.grad(eager_out.sum(), (q, k, v))
    torch.testing.assert_close(out, eager_out)
    for grad, eager_grad in zip(grads, eager_grads):
        torch.testing.assert_close(grad, eager_grad)


def test_custom_ops_pass_opcheck(make_qkv, padding_mask):
    """Schema, fake (meta) kernels and autograd registration agree with the real launches."""
    q, k, v = make_qkv(1, 2, 16, 16, 32)
    mask = padding_mask(1, 16)
    args = (q.detach(), k.detach(), v.detach(), mask, None, False, 0.0, 32**-0.5)
    torch.library.opcheck(torch.ops.polyfuse.flash_attention_forward.default, args,
                          test_utils=("test_schema", "test_faketensor"))
    out, lse, seed = torch.ops.polyfuse.flash_attention_forward(*args)
    bwd_args = (torch.ones_like(out), q.detach(), k.detach(), v.detach(), out, lse, seed, mask, None, False, 0.0,
                32**-0.5)
    torch.library.opcheck(torch.ops.polyfuse.flash_attention_backward.default, bwd_args,
                          test_utils=("test_schema", "test_faketensor"))

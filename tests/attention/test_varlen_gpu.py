"""GPU checks of the packed (varlen) Triton kernels in bf16/fp16 at multimodal sizes.

The padded kernels are judged against the fp32 reference in test_gpu.py; here the packed call must
give what the padded call with the same samples gives (output and gradients, same tile arithmetic up
to summation order), and sample-by-sample attention where the padded layout cannot express the call
(causal with per-sample offsets).
"""

from __future__ import annotations

import pytest
import torch

from polyfuse.attention import attention
from polyfuse.attention.varlen import Packing, cu_seqlens_from_lengths

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

# (B, H, Lq, Lk, D, self-attention?): padded text self-attention and image->text cross-attention.
CASES = {"text-self-77": (16, 12, 77, 77, 64, True), "image->text-197x40": (8, 12, 197, 40, 64, False)}
TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 3e-3}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_packed_equals_padded_on_gpu(case, dtype):
    batch, heads, lq, lk, head_dim, self_attention = CASES[case]
    gen = torch.Generator(device="cuda").manual_seed(0)
    key_lengths = torch.randint(1, lk + 1, (batch,), device="cuda", generator=gen)
    key_lengths[0] = 0  # an absent modality
    query_lengths = key_lengths if self_attention else torch.full_like(key_lengths, lq)
    packing_q, packing_k = Packing.from_lengths(query_lengths, lq), Packing.from_lengths(key_lengths, lk)
    q, k, v = (torch.randn(batch, heads, n, head_dim, device="cuda", dtype=dtype, generator=gen)
               for n in (lq, lk, lk))
    padded_leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    padded = attention(*padded_leaves, packing_k.mask(), backend="triton")
    grad_out = torch.randn_like(padded) * packing_q.mask()[:, None, :, None]  # padded query rows: no gradient
    padded_grads = torch.autograd.grad(padded, padded_leaves, grad_out)

    packed_leaves = [packing.unpad(t.transpose(1, 2)).requires_grad_()
                     for packing, t in ((packing_q, q), (packing_k, k), (packing_k, v))]
    packed = attention(*packed_leaves, cu_seqlens_q=packing_q.cu_seqlens, cu_seqlens_k=packing_k.cu_seqlens,
                       max_seqlen_q=lq, max_seqlen_k=lk, backend="triton")
    packed_grads = torch.autograd.grad(packed, packed_leaves, packing_q.unpad(grad_out.transpose(1, 2)))
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(packed, packing_q.unpad(padded.transpose(1, 2)), atol=tol, rtol=tol)
    for packing, got, want in zip((packing_q, packing_k, packing_k), packed_grads, padded_grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, packing.unpad(want.transpose(1, 2)), atol=tol, rtol=tol)


def test_packed_causal_with_per_sample_offsets_on_gpu():
    lengths_q, lengths_k = torch.tensor([3, 40, 0, 17]), torch.tensor([30, 40, 5, 9])
    cu_q, cu_k = (cu_seqlens_from_lengths(t).cuda() for t in (lengths_q, lengths_k))
    gen = torch.Generator(device="cuda").manual_seed(1)
    q = torch.randn(int(lengths_q.sum()), 4, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
    k, v = (torch.randn(int(lengths_k.sum()), 4, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
            for _ in range(2))
    out = attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=True, backend="triton")
    expected = attention(q.float(), k.float(), v.float(), cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=True,
                         backend="reference")
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("backend", ["triton", "flex"])
def test_packed_backward_with_a_keyless_sample_on_gpu(backend):
    """A sample without keys (an absent modality): zero output, finite gradients equal to the reference."""
    lengths_q, lengths_k = torch.tensor([12, 7, 30]), torch.tensor([20, 0, 30])
    cu_q, cu_k = (cu_seqlens_from_lengths(t).cuda() for t in (lengths_q, lengths_k))
    gen = torch.Generator(device="cuda").manual_seed(2)
    q = torch.randn(int(lengths_q.sum()), 4, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
    k, v = (torch.randn(int(lengths_k.sum()), 4, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
            for _ in range(2))
    results = []
    for name, dtype in ((backend, torch.bfloat16), ("reference", torch.float32)):
        leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        out = attention(*leaves, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=True, backend=name)
        results.append((out, torch.autograd.grad(out.float().sum(), leaves)))
    (out, grads), (expected, expected_grads) = results
    assert torch.equal(out[12:19], torch.zeros_like(out[12:19]))
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=3e-2)
    for got, want in zip(grads, expected_grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.float(), want, atol=5e-2, rtol=5e-2)

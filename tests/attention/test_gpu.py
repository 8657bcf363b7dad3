"""GPU checks at real sizes, bf16/fp16: the interpreter tests repeated on the compiled kernels.

Errors are judged against the fp32 reference the way FlashAttention's own tests do: ours may be at
most twice as far from fp32 as a plain PyTorch attention computed in the same low precision (plus a
small floor), for the output and for dq, dk, dv.
"""

from __future__ import annotations

import pytest
import torch

from polyfuse.attention import AttentionArgs, attention
from polyfuse.attention.masks import allowed_mask
from polyfuse.attention.reference import reference_attention

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

# (B, H, Lq, Lk, D, padded, causal): the multimodal shapes plus a causal decoder and head dims.
CASES = {
    "image-self-197": (8, 12, 197, 197, 64, True, False),
    "image->text-77": (8, 12, 577, 77, 64, True, False),
    "text->image-1025": (8, 12, 40, 1025, 64, False, False),
    "decoder-causal": (8, 12, 77, 77, 64, True, True),
    "long-causal-d128": (2, 8, 2048, 2048, 128, False, True),
    "d32-cross": (4, 8, 300, 64, 32, True, False),
}


def _lowp_attention(q, k, v, mask, causal):
    """Plain PyTorch attention with matmuls in the input dtype and an fp32 softmax."""
    scores = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    allowed = allowed_mask(mask, q.shape[2], k.shape[2], causal=causal, device=q.device)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, -1).nan_to_num(0.0)
    return probs.to(q.dtype) @ v


def _inputs(case, dtype, seed=0):
    batch, heads, lq, lk, head_dim, padded, causal = CASES[case]
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, length, head_dim, device="cuda", generator=gen, dtype=dtype).requires_grad_()
               for length in (lq, lk, lk))
    mask = None
    if padded:
        lengths = torch.randint(1, lk + 1, (batch,), device="cuda", generator=gen)
        lengths[0] = 0  # an absent modality
        mask = torch.arange(lk, device="cuda")[None, :] < lengths[:, None]
    return q, k, v, mask, causal


def _forward_backward(fn, q, k, v, grad_out):
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves)
    return [out, *torch.autograd.grad(out, leaves, grad_out)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("backend", ["triton", "flex", "sdpa", "auto"])
@pytest.mark.parametrize("case", list(CASES))
def test_backend_is_as_accurate_as_low_precision_pytorch(case, backend, dtype):
    q, k, v, mask, causal = _inputs(case, dtype)
    grad_out = torch.randn_like(q)
    ours = _forward_backward(lambda q, k, v: attention(q, k, v, mask, causal=causal, backend=backend), q, k, v, grad_out)
    exact = _forward_backward(
        lambda q, k, v: reference_attention(AttentionArgs(q.float(), k.float(), v.float(), mask, causal=causal))[0],
        q, k, v, grad_out.float())
    lowp = _forward_backward(lambda q, k, v: _lowp_attention(q, k, v, mask, causal), q, k, v, grad_out)
    for name, mine, ref, base in zip(("out", "dq", "dk", "dv"), ours, exact, lowp):
        assert torch.isfinite(mine).all(), f"{name} has NaN/inf"
        err = (mine.float() - ref.float()).abs().max().item()
        base_err = (base.float() - ref.float()).abs().max().item()
        assert err <= 2 * base_err + 1e-3, f"{name}: error {err:.2e} vs low-precision PyTorch {base_err:.2e}"
    if mask is not None:  # sample 0 has no keys: zeros, never NaN
        for tensor in ours[:2]:
            assert torch.equal(tensor[0], torch.zeros_like(tensor[0]))


@pytest.mark.parametrize("backend", ["triton", "flex"])
def test_attention_maps_from_the_lse(backend):
    q, k, v, mask, _ = _inputs("image->text-77", torch.bfloat16)
    _, probs = attention(q, k, v, mask, backend=backend, need_weights=True)
    _, ref_probs = reference_attention(AttentionArgs(q.detach(), k.detach(), v.detach(), mask))
    torch.testing.assert_close(probs.float(), ref_probs.float(), atol=2e-2, rtol=0)


def test_triton_dropout_on_gpu():
    q, k, v, mask, _ = _inputs("image->text-77", torch.bfloat16)
    out = attention(q, k, v, mask, backend="triton")
    torch.manual_seed(0)
    dropped = attention(q, k, v, mask, backend="triton", dropout_p=0.1)
    dropped.float().square().sum().backward()
    assert torch.isfinite(q.grad).all() and not torch.equal(dropped, out)


def test_triton_under_inductor():
    q, k, v, mask, _ = _inputs("decoder-causal", torch.bfloat16)
    compiled = torch.compile(lambda q, k, v: attention(q, k, v, mask, causal=True, backend="triton"), fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), attention(q, k, v, mask, causal=True, backend="triton"))

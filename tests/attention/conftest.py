"""Attention tests run the Triton kernels in Triton's CPU interpreter.

``TRITON_INTERPRET=1`` must be in the environment before ``triton.language`` is first imported
(Triton decides at decoration time whether a function is compiled or interpreted, its own
``tl.zeros`` & co. included), and lightning imports it: the root ``tests/conftest.py`` sets it before
any import. It is repeated here for ``pytest tests/attention`` run with another rootdir. It only
changes how *polyfuse's* kernels run on CPU tensors: other tests never select ``backend="triton"``
on CPU, and ``auto`` never picks it there.
"""

from __future__ import annotations

import os

import pytest
import torch

from polyfuse.attention.args import AttentionArgs
from polyfuse.attention.reference import reference_attention

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def make_qkv():
    """``make_qkv(B, H, Lq, Lk, D, dtype=float32, seed=0)`` -> leaf ``q, k, v`` requiring grad."""

    def make(batch: int, heads: int, lq: int, lk: int, head_dim: int, dtype: torch.dtype = torch.float32,
             seed: int = 0, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        shapes = [(batch, heads, lq, head_dim), (batch, heads, lk, head_dim), (batch, heads, lk, head_dim)]
        return tuple(torch.randn(s, generator=gen).to(device=device, dtype=dtype).requires_grad_() for s in shapes)

    return make


@pytest.fixture
def padding_mask():
    """``padding_mask(B, Lk, seed=0, empty_rows=())`` -> random ``(B, Lk)`` bool with >= 1 real key per
    row, except the samples listed in ``empty_rows`` (all padding: an absent modality)."""

    def make(batch: int, lk: int, seed: int = 0, empty_rows: tuple[int, ...] = (), device: str = "cpu") -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        mask = torch.rand(batch, lk, generator=gen) > 0.4
        mask[:, 0] = True
        for row in empty_rows:
            mask[row] = False
        return mask.to(device)

    return make


TOLERANCES = {torch.float32: (2e-5, 5e-5), torch.float16: (3e-3, 1e-2), torch.bfloat16: (2e-2, 6e-2)}


@pytest.fixture
def check_against_reference():
    """``check(out, grads, q, k, v, mask, causal=..., grad_out=...)``: assert a backend's output and
    q/k/v gradients equal the fp32 reference within the dtype's (output, gradient) tolerance, and are
    finite."""

    def check(out, grads, q, k, v, mask, *, causal=False, grad_out, scale=None, key_lengths=None):
        if key_lengths is not None:
            mask = torch.arange(k.shape[2])[None, :] < key_lengths[:, None]
        leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
        ref, _ = reference_attention(AttentionArgs(*leaves, mask, causal=causal, scale=scale))
        ref_grads = torch.autograd.grad(ref, leaves, grad_out.float()) if grads is not None else None
        out_tol, grad_tol = TOLERANCES[q.dtype]
        assert out.dtype == q.dtype and out.shape == q.shape
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), ref, atol=out_tol, rtol=out_tol)
        if grads is not None:
            for name, grad, ref_grad in zip("qkv", grads, ref_grads):
                assert torch.isfinite(grad).all(), f"d{name} has NaN/inf"
                torch.testing.assert_close(grad.float(), ref_grad, atol=grad_tol, rtol=grad_tol, msg=lambda m: f"d{name}: {m}")

    return check

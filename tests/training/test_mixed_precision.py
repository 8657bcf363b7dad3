"""Mixed precision as Lightning runs it (autocast): attention keeps fp32 softmax statistics in every
backend, so large logits lose no more than the bf16 rounding of the output."""

from __future__ import annotations

import pytest
import torch

from polyfuse.attention import attention

B, H, LQ, LK, D = 2, 2, 16, 64, 32


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = (torch.randn(B, H, LQ, D, generator=g) * 3).bfloat16()   # logits up to ~35: bf16 spacing 0.25 there
    k = (torch.randn(B, H, LK, D, generator=g) * 3).bfloat16()
    v = torch.randn(B, H, LK, D, generator=g).bfloat16()
    return q, k, v


def _exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scores = q.double() @ k.double().transpose(-1, -2) * D ** -0.5
    return torch.softmax(scores, dim=-1) @ v.double()


# the output is bf16: its rounding alone is up to ~8e-3 here; bf16 scores/statistics give ~1e-1
OUTPUT_ROUNDING = 2e-2

BACKENDS = [
    "reference",
    "sdpa",
    pytest.param("flex", marks=pytest.mark.slow),               # compiles on first use (~40 s on CPU)
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_under_bf16_autocast_keeps_fp32_statistics(backend: str):
    q, k, v = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q.float(), k.float(), v.float(), backend=backend)
    error = (out.double() - _exact(q, k, v)).abs().max().item()
    assert error < OUTPUT_ROUNDING, f"{backend}: max error {error:.3e}"


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_attention_on_bf16_tensors_keeps_fp32_statistics(backend: str):
    q, k, v = _inputs()
    error = (attention(q, k, v, backend=backend).double() - _exact(q, k, v)).abs().max().item()
    assert error < OUTPUT_ROUNDING, f"{backend}: max error {error:.3e}"

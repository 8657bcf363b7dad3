"""Materialise the attention-dropout keep mask the fused kernels draw, for tests and debugging."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from polyfuse.attention.kernels.blocks import dropout_keep, head_seed


@triton.jit
def _dropout_mask_kernel(Seed, Keep, LQ, LK, dropout_p, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_bh = tl.program_id(2)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    keep = dropout_keep(head_seed(Seed, pid_bh), offs_m, offs_n, LK, dropout_p)
    ok = (offs_m < LQ)[:, None] & (offs_n < LK)[None, :]
    tl.store(Keep + pid_bh * LQ * LK + offs_m[:, None] * LK + offs_n[None, :], keep.to(tl.int8), mask=ok)


def dropout_keep_mask(seed: Tensor, batch: int, heads: int, lq: int, lk: int, dropout_p: float) -> Tensor:
    """The keep mask ``(B, H, Lq, Lk)`` bool that the kernels used for the call that drew ``seed``.

    ``seed`` is the ``(1,)`` int64 tensor returned by the forward launch.
    """
    keep = torch.empty(batch, heads, lq, lk, dtype=torch.int8, device=seed.device)
    grid = (triton.cdiv(lq, 16), triton.cdiv(lk, 16), batch * heads)
    _dropout_mask_kernel[grid](seed, keep, lq, lk, dropout_p, BLOCK_M=16, BLOCK_N=16)
    return keep.bool()

"""Triton device functions shared by the forward and backward attention kernels.

Each helper works on one tile: ``BLOCK_M`` queries by ``BLOCK_N`` keys. Scores live in base-2 units
(``s * scale * log2(e)``) so the kernels use ``exp2``; the saved log-sum-exp is in natural units.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tile_dot(a, b, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """``a @ b`` accumulated in fp32.

    ``UPCAST`` computes in fp32: Triton's CPU interpreter multiplies bf16 operands as raw integers,
    so interpreted bf16 runs upcast first; on a GPU ``UPCAST`` is False and the tensor cores see the
    input dtype. ``PRECISION`` is ``"ieee"`` for fp32 (or upcast) operands, so fp32 is never silently
    TF32, and ``"tf32"`` (Triton's default, ignored for 16-bit operands) otherwise.
    """
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def allowed_tile(offs_m, offs_n, kv_end, mask_row, causal_shift,
                 IS_CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, CHECK_BOUNDS: tl.constexpr):
    """Which (query, key) pairs of a tile may attend: ``(BLOCK_M, BLOCK_N)`` int1.

    ``kv_end`` is the sample's number of keys (padding beyond it), ``mask_row`` the sample's
    ``(BLOCK_N,)`` key padding bits (ignored unless ``HAS_MASK``), ``causal_shift = Lk - Lq``: query
    ``i`` sees key ``j <= i + causal_shift``.
    """
    ok = tl.full((offs_m.shape[0], offs_n.shape[0]), 1, tl.int1)
    if CHECK_BOUNDS:
        ok = ok & (offs_n[None, :] < kv_end)
    if HAS_MASK:
        ok = ok & (mask_row[None, :] != 0)
    if IS_CAUSAL:
        ok = ok & (offs_n[None, :] <= offs_m[:, None] + causal_shift)
    return ok


@triton.jit
def dropout_keep(seed, offs_m, offs_n, kv_len, dropout_p):
    """Keep-bits of attention dropout for a tile, reproducible from ``seed`` in the backward.

    ``seed`` is an int64 whose high word already holds the (batch, head) index, so every head draws
    an independent Philox stream; the counter is the (query, key) position inside the head.
    """
    counter = offs_m[:, None] * kv_len + offs_n[None, :]
    return tl.rand(seed, counter) >= dropout_p


@triton.jit
def head_seed(SeedPtr, pid_bh):
    """The per-call seed (a device scalar, so no host sync) with ``pid_bh`` in the high word."""
    base = tl.load(SeedPtr).to(tl.int64)
    return base + (pid_bh.to(tl.int64) << 32)


@triton.jit
def sample_rows(CuSeqlens, b, padded_length, VARLEN: tl.constexpr):
    """``(first row, number of rows)`` of sample ``b``.

    Padded layout: ``(0, padded_length)``. Packed (``VARLEN``): read from ``cu_seqlens`` (the sample
    owns rows ``cu[b]:cu[b + 1]``), the count clamped to ``[0, padded_length]`` (= ``max_seqlen``, which
    sized the grid) so that no program walks past the rows its grid covers.
    """
    start = 0
    rows = padded_length
    if VARLEN:
        start = tl.load(CuSeqlens + b)
        rows = tl.minimum(tl.maximum(tl.load(CuSeqlens + b + 1) - start, 0), padded_length)
    return start, rows

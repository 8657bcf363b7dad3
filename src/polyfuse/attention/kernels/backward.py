"""Flash-attention backward kernels (FlashAttention-2, Dao 2023) with padding, causal, Lq != Lk.

Three launches, none storing an ``Lq x Lk`` matrix:

1. ``delta = rowsum(dO * O)``: ``(B, H, Lq)`` fp32.
2. dK/dV: one program per ``BLOCK_N`` keys streams the query blocks that can see them, recomputes
   ``P = exp(s - lse)`` from the saved log-sum-exp, and accumulates
   ``dV += P~^T dO`` and ``dK += dS^T Q`` with ``dS = P * (dP~ - delta)``, ``dP = dO V^T``
   (``~`` = after the dropout keep-mask and ``1/(1-p)`` scaling).
3. dQ: one program per ``BLOCK_M`` queries streams their keys, ``dQ += dS K``.

Splitting dK/dV and dQ avoids atomics and lets queries and keys have different lengths. Padded
keys get zero dK/dV; query rows without any key have ``lse = +inf`` so ``P = 0`` and dQ is zero.
Packed (``VARLEN``) calls index rows as the forward does (:mod:`polyfuse.attention.kernels.forward`);
``delta`` shares the log-sum-exp's layout.
"""

from __future__ import annotations

import triton
import triton.language as tl

from polyfuse.attention.kernels.blocks import allowed_tile, dropout_keep, head_seed, sample_rows, tile_dot
from polyfuse.attention.kernels.tuning import key_block_configs, prune_configs, query_block_configs

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def attention_backward_delta_kernel(Out, DOut, Delta, stride_ob, stride_oh, stride_om,
                                    stride_db, stride_dh, stride_dm, H, LQ,
                                    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    """``delta[b, h, i] = sum_d dO[b, h, i, d] * O[b, h, i, d]``; grid ``(cdiv(Lq, BLOCK_M), B * H)``."""
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (offs_m < LQ)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :], mask=ok, other=0.0)
    do = tl.load(DOut + b * stride_db + h * stride_dh + offs_m[:, None] * stride_dm + offs_d[None, :], mask=ok, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta + pid_bh * LQ + offs_m, delta, mask=offs_m < LQ)


@triton.autotune(configs=key_block_configs(), key=["LQ_KEY", "LK_KEY", "HEAD_DIM", "IS_CAUSAL", "HAS_MASK", "HAS_KV_LEN", "HAS_DROPOUT", "VARLEN"],
                 prune_configs_by={"early_config_prune": prune_configs})
@triton.jit
def attention_backward_dkdv_kernel(
    Q, K, V, DOut, Lse, Delta, DK, DV, Mask, KvLen, Seed, CuQ, CuK,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_dom, stride_dkb, stride_dkh, stride_dkn, stride_dvb, stride_dvh, stride_dvn,
    stride_mb, stride_lb, stride_lh, H, LQ, LK, qk_scale, sm_scale, dropout_p, LQ_KEY, LK_KEY,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, HAS_KV_LEN: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    VARLEN: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """Grid ``(cdiv(Lk, BLOCK_N), B * H)`` (packed: ``max_seqlen_k``); writes dK (already times
    ``sm_scale``) and dV."""
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    start_n = tl.program_id(0) * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    q_start, seq_q = sample_rows(CuQ, b, LQ, VARLEN)
    k_start, seq_k = sample_rows(CuK, b, LK, VARLEN)
    kv_end = seq_k
    if HAS_KV_LEN:
        kv_end = tl.minimum(tl.load(KvLen + b), LK)
    n_ok = offs_n < kv_end
    kv_tile_ok = n_ok[:, None] & d_ok[None, :]
    k = tl.load(K + b * stride_kb + h * stride_kh + (k_start + offs_n[:, None]) * stride_kn + offs_d[None, :],
                mask=kv_tile_ok, other=0.0)
    v = tl.load(V + b * stride_vb + h * stride_vh + (k_start + offs_n[:, None]) * stride_vn + offs_d[None, :],
                mask=kv_tile_ok, other=0.0)
    mask_row = offs_n
    if HAS_MASK:
        mask_row = tl.load(Mask + b * stride_mb + offs_n, mask=n_ok, other=0)
    causal_shift = seq_k - seq_q
    seed = 0
    if HAS_DROPOUT:
        seed = head_seed(Seed, pid_bh)
    Q += b * stride_qb + h * stride_qh + q_start * stride_qm
    DOut += b * stride_dob + h * stride_doh + q_start * stride_dom
    Lse += b * stride_lb + h * stride_lh + q_start
    Delta += b * stride_lb + h * stride_lh + q_start
    lo = 0
    if IS_CAUSAL:  # key j is seen by queries i >= j - causal_shift
        lo = (tl.maximum(start_n - causal_shift, 0) // BLOCK_M) * BLOCK_M
    hi = tl.where(start_n < kv_end, seq_q, 0)  # an all-padding key block: nothing attends to it
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_ok = offs_m < seq_q
        q_tile_ok = m_ok[:, None] & d_ok[None, :]
        q = tl.load(Q + offs_m[:, None] * stride_qm + offs_d[None, :], mask=q_tile_ok, other=0.0)
        do = tl.load(DOut + offs_m[:, None] * stride_dom + offs_d[None, :], mask=q_tile_ok, other=0.0)
        lse = tl.load(Lse + offs_m, mask=m_ok, other=float("inf")) * LOG2E
        delta = tl.load(Delta + offs_m, mask=m_ok, other=0.0)
        s = tile_dot(q, tl.trans(k), UPCAST, PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N), base 2
        ok = allowed_tile(offs_m, offs_n, kv_end, mask_row, causal_shift, IS_CAUSAL, HAS_MASK, True)
        p = tl.math.exp2(tl.where(ok, s - lse[:, None], float("-inf")))
        dp = tile_dot(do, tl.trans(v), UPCAST, PRECISION)
        p_drop = p
        if HAS_DROPOUT:
            keep = dropout_keep(seed, offs_m, offs_n, LK, dropout_p)
            p_drop = tl.where(keep, p / (1.0 - dropout_p), 0.0)
            dp = tl.where(keep, dp / (1.0 - dropout_p), 0.0)
        dv += tile_dot(tl.trans(p_drop.to(do.dtype)), do, UPCAST, PRECISION)
        ds = p * (dp - delta[:, None])
        dk += tile_dot(tl.trans(ds.to(q.dtype)), q, UPCAST, PRECISION)
    dk *= sm_scale
    store_ok = (offs_n < seq_k)[:, None] & d_ok[None, :]  # padded keys get explicit zeros
    DK += b * stride_dkb + h * stride_dkh + k_start * stride_dkn
    DV += b * stride_dvb + h * stride_dvh + k_start * stride_dvn
    tl.store(DK + offs_n[:, None] * stride_dkn + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=store_ok)
    tl.store(DV + offs_n[:, None] * stride_dvn + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=store_ok)


@triton.autotune(configs=query_block_configs(), key=["LQ_KEY", "LK_KEY", "HEAD_DIM", "IS_CAUSAL", "HAS_MASK", "HAS_KV_LEN", "HAS_DROPOUT", "VARLEN"],
                 prune_configs_by={"early_config_prune": prune_configs})
@triton.jit
def attention_backward_dq_kernel(
    Q, K, V, DOut, Lse, Delta, DQ, Mask, KvLen, Seed, CuQ, CuK,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_dom, stride_dqb, stride_dqh, stride_dqm,
    stride_mb, stride_lb, stride_lh, H, LQ, LK, qk_scale, sm_scale, dropout_p, LQ_KEY, LK_KEY,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, HAS_KV_LEN: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    VARLEN: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """Grid ``(cdiv(Lq, BLOCK_M), B * H)`` (packed: ``max_seqlen_q``); writes dQ (times ``sm_scale``)."""
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    start_m = tl.program_id(0) * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_start, seq_q = sample_rows(CuQ, b, LQ, VARLEN)
    k_start, seq_k = sample_rows(CuK, b, LK, VARLEN)
    m_ok = offs_m < seq_q
    d_ok = offs_d < HEAD_DIM
    q_tile_ok = m_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b * stride_qb + h * stride_qh + (q_start + offs_m[:, None]) * stride_qm + offs_d[None, :],
                mask=q_tile_ok, other=0.0)
    do = tl.load(DOut + b * stride_dob + h * stride_doh + (q_start + offs_m[:, None]) * stride_dom + offs_d[None, :],
                 mask=q_tile_ok, other=0.0)
    row = b * stride_lb + h * stride_lh + q_start + offs_m
    lse = tl.load(Lse + row, mask=m_ok, other=float("inf")) * LOG2E
    delta = tl.load(Delta + row, mask=m_ok, other=0.0)
    K += b * stride_kb + h * stride_kh + k_start * stride_kn
    V += b * stride_vb + h * stride_vh + k_start * stride_vn
    kv_end = seq_k
    if HAS_KV_LEN:
        kv_end = tl.minimum(tl.load(KvLen + b), LK)
    causal_shift = seq_k - seq_q
    hi = tl.where(start_m < seq_q, kv_end, 0)  # a query block past the sample's end reads no key
    if IS_CAUSAL:
        hi = tl.minimum(hi, tl.maximum(start_m + BLOCK_M + causal_shift, 0))
    seed = 0
    if HAS_DROPOUT:
        seed = head_seed(Seed, pid_bh)
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < kv_end
        kv_tile_ok = n_ok[:, None] & d_ok[None, :]
        k = tl.load(K + offs_n[:, None] * stride_kn + offs_d[None, :], mask=kv_tile_ok, other=0.0)
        v = tl.load(V + offs_n[:, None] * stride_vn + offs_d[None, :], mask=kv_tile_ok, other=0.0)
        mask_row = offs_n
        if HAS_MASK:
            mask_row = tl.load(Mask + b * stride_mb + offs_n, mask=n_ok, other=0)
        s = tile_dot(q, tl.trans(k), UPCAST, PRECISION) * qk_scale
        ok = allowed_tile(offs_m, offs_n, kv_end, mask_row, causal_shift, IS_CAUSAL, HAS_MASK, True)
        p = tl.math.exp2(tl.where(ok, s - lse[:, None], float("-inf")))
        dp = tile_dot(do, tl.trans(v), UPCAST, PRECISION)
        if HAS_DROPOUT:
            keep = dropout_keep(seed, offs_m, offs_n, LK, dropout_p)
            dp = tl.where(keep, dp / (1.0 - dropout_p), 0.0)
        ds = p * (dp - delta[:, None])
        dq += tile_dot(ds.to(k.dtype), k, UPCAST, PRECISION)
    dq *= sm_scale
    DQ += b * stride_dqb + h * stride_dqh + q_start * stride_dqm
    tl.store(DQ + offs_m[:, None] * stride_dqm + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=q_tile_ok)

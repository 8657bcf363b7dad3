"""Flash-attention forward kernel with key padding, per-sample key lengths, packed (varlen) samples,
causal and dropout.

Online softmax (Dao et al., 2022, FlashAttention; Dao, 2023, FlashAttention-2): one program owns
``BLOCK_M`` query rows of one (batch, head) and streams over key blocks, keeping the running max
``m``, the running denominator ``l`` and the fp32 output accumulator. Keys past the sample's length
are never loaded. It writes the output and the log-sum-exp ``lse`` (natural log, ``(B, H, Lq)``,
``+inf`` for a query row with no allowed key so that ``exp(s - lse) = 0`` in the backward).

Two layouts: padded ``(B, H, L, D)`` and packed ``(T, H, D)`` (``VARLEN``: sample ``b`` owns rows
``cu_seqlens[b]:cu_seqlens[b + 1]``; the batch stride is 0 and each program adds its sample's first
row). The log-sum-exp is indexed ``b * stride_lb + h * stride_lh + row``: ``(B, H, Lq)`` or ``(H, Tq)``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from polyfuse.attention.kernels.blocks import allowed_tile, dropout_keep, head_seed, sample_rows, tile_dot
from polyfuse.attention.kernels.tuning import forward_configs, prune_configs

LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _forward_key_blocks(acc, m_i, l_i, q, K, V, mask_ptr, offs_m, offs_d, start, end, kv_end, causal_shift,
                        stride_kn, stride_vn, qk_scale, seed, dropout_p, LK,
                        HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, IS_CAUSAL: tl.constexpr,
                        HAS_MASK: tl.constexpr, CHECK_BOUNDS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                        UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """Fold key blocks ``[start, end)`` into the running softmax state."""
    d_ok = offs_d < HEAD_DIM
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < kv_end
        if CHECK_BOUNDS:
            k_t = tl.load(K + offs_n[None, :] * stride_kn + offs_d[:, None], mask=n_ok[None, :] & d_ok[:, None], other=0.0)
            v = tl.load(V + offs_n[:, None] * stride_vn + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        else:
            k_t = tl.load(K + offs_n[None, :] * stride_kn + offs_d[:, None], mask=d_ok[:, None], other=0.0)
            v = tl.load(V + offs_n[:, None] * stride_vn + offs_d[None, :], mask=d_ok[None, :], other=0.0)
        mask_row = offs_n
        if HAS_MASK:
            mask_row = tl.load(mask_ptr + offs_n, mask=n_ok, other=0)
        s = tile_dot(q, k_t, UPCAST, PRECISION) * qk_scale
        if CHECK_BOUNDS or HAS_MASK or IS_CAUSAL:
            ok = allowed_tile(offs_m, offs_n, kv_end, mask_row, causal_shift, IS_CAUSAL, HAS_MASK, CHECK_BOUNDS)
            s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet stays all-zero
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        if HAS_DROPOUT:
            keep = dropout_keep(seed, offs_m, offs_n, LK, dropout_p)
            p = tl.where(keep, p / (1.0 - dropout_p), 0.0)
        acc = acc * alpha[:, None] + tile_dot(p.to(v.dtype), v, UPCAST, PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.autotune(configs=forward_configs(), key=["LQ_KEY", "LK_KEY", "HEAD_DIM", "IS_CAUSAL", "HAS_MASK", "HAS_KV_LEN", "HAS_DROPOUT", "VARLEN"],
                 prune_configs_by={"early_config_prune": prune_configs})
@triton.jit
def attention_forward_kernel(
    Q, K, V, Out, Lse, Mask, KvLen, Seed, CuQ, CuK,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om, stride_mb, stride_lb, stride_lh,
    H, LQ, LK, qk_scale, dropout_p, LQ_KEY, LK_KEY,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, HAS_KV_LEN: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    VARLEN: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """Grid ``(cdiv(Lq, BLOCK_M), B * H)`` (packed: ``Lq = max_seqlen_q``; blocks past a sample's own
    length do nothing). ``qk_scale`` = softmax scale * log2(e)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_start, seq_q = sample_rows(CuQ, b, LQ, VARLEN)
    k_start, seq_k = sample_rows(CuK, b, LK, VARLEN)
    m_ok = offs_m < seq_q
    d_ok = offs_d < HEAD_DIM
    Q += b * stride_qb + h * stride_qh + q_start * stride_qm
    q = tl.load(Q + offs_m[:, None] * stride_qm + offs_d[None, :], mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    K += b * stride_kb + h * stride_kh + k_start * stride_kn
    V += b * stride_vb + h * stride_vh + k_start * stride_vn
    mask_ptr = Mask + b * stride_mb
    kv_end = seq_k
    if HAS_KV_LEN:
        kv_end = tl.minimum(tl.load(KvLen + b), LK)
    causal_shift = seq_k - seq_q
    hi = tl.where(start_m < seq_q, kv_end, 0)  # a query block past the sample's end reads no key
    full_end = (kv_end // BLOCK_N) * BLOCK_N  # key blocks with no padding past kv_end
    if IS_CAUSAL:
        hi = tl.minimum(hi, tl.maximum(start_m + BLOCK_M + causal_shift, 0))
        # blocks every query of this tile may fully see: n0 + BLOCK_N - 1 <= start_m + causal_shift
        full_end = tl.minimum(full_end, (tl.maximum(start_m + causal_shift + 1, 0) // BLOCK_N) * BLOCK_N)
    full_end = tl.minimum(full_end, hi)
    seed = 0
    if HAS_DROPOUT:
        seed = head_seed(Seed, pid_bh)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    # Interior blocks: no bounds or causal test (the padding mask, if any, still applies).
    acc, m_i, l_i = _forward_key_blocks(
        acc, m_i, l_i, q, K, V, mask_ptr, offs_m, offs_d, 0, full_end, kv_end, causal_shift,
        stride_kn, stride_vn, qk_scale, seed, dropout_p, LK, HEAD_DIM, BLOCK_N, False, HAS_MASK, False,
        HAS_DROPOUT, UPCAST, PRECISION)
    # Edge blocks: the diagonal band and the ragged tail.
    acc, m_i, l_i = _forward_key_blocks(
        acc, m_i, l_i, q, K, V, mask_ptr, offs_m, offs_d, full_end, hi, kv_end, causal_shift,
        stride_kn, stride_vn, qk_scale, seed, dropout_p, LK, HEAD_DIM, BLOCK_N, IS_CAUSAL, HAS_MASK, True,
        HAS_DROPOUT, UPCAST, PRECISION)
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("inf"), (m_i + tl.math.log2(l_safe)) * LN2)
    Out += b * stride_ob + h * stride_oh + q_start * stride_om
    tl.store(Out + offs_m[:, None] * stride_om + offs_d[None, :], out.to(Out.dtype.element_ty),
             mask=m_ok[:, None] & d_ok[None, :])
    tl.store(Lse + b * stride_lb + h * stride_lh + q_start + offs_m, lse, mask=m_ok)

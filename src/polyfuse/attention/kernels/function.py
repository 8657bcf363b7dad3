"""The fused Triton attention as PyTorch custom ops and a ``torch.autograd.Function``.

The launches are registered as ``torch.library`` custom ops (``polyfuse::flash_attention_forward``
and ``polyfuse::flash_attention_backward``) with fake (meta) implementations, so ``torch.compile``
traces through :class:`FlashAttentionFunction` without graph breaks and treats each kernel launch as
one opaque node.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import triton
from torch import Tensor

from polyfuse.attention.kernels.backward import (
    attention_backward_delta_kernel,
    attention_backward_dkdv_kernel,
    attention_backward_dq_kernel,
)
from polyfuse.attention.kernels.forward import attention_forward_kernel
from polyfuse.attention.kernels.tuning import interpreting, length_key

LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 256
_INTERPRETED_AT_IMPORT = interpreting()


def check_supported(q: Tensor, k: Tensor, v: Tensor) -> None:
    """Raise a ``ValueError``/``RuntimeError`` that says why the kernels cannot take these inputs."""
    if q.device.type == "cpu" and not _INTERPRETED_AT_IMPORT:
        raise RuntimeError(
            "attention backend 'triton' needs CUDA tensors; on CPU it only runs in Triton's interpreter, "
            "which must be enabled with TRITON_INTERPRET=1 before polyfuse.attention.kernels is imported "
            "(slow: for tests). Use backend='auto' or 'sdpa' on CPU.")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"attention backend 'triton' takes float16, bfloat16 or float32, got {q.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] > MAX_HEAD_DIM or v.shape[-1] != q.shape[-1]:
        raise ValueError(f"attention backend 'triton' needs equal q/k/v head dims <= {MAX_HEAD_DIM}, "
                         f"got q {q.shape[-1]}, v {v.shape[-1]}")


def _last_dim_contiguous(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _key_layout(key_padding_mask: Tensor | None, key_lengths: Tensor | None, lk: int,
                like: Tensor) -> tuple[Tensor, Tensor, bool, bool]:
    """``(mask bytes (B, Lk) or dummy, kv_len (B,) int32 or dummy, HAS_MASK, HAS_KV_LEN)``.

    With a padding mask the kernels also get each sample's last real key + 1, so trailing padding
    blocks are skipped without being read.
    """
    if key_padding_mask is not None:
        mask = key_padding_mask.contiguous()
        positions = torch.arange(1, lk + 1, device=mask.device, dtype=torch.int32)
        kv_len = (mask * positions).amax(-1).to(torch.int32)
        return mask.view(torch.uint8), kv_len, True, True
    if key_lengths is not None:
        return like, key_lengths.to(device=like.device, dtype=torch.int32).contiguous(), False, True
    return like, like, False, False


def _common_meta(q: Tensor, causal: bool, has_mask: bool, has_kv_len: bool, dropout_p: float) -> dict:
    head_dim = q.shape[-1]
    upcast = _INTERPRETED_AT_IMPORT and q.dtype == torch.bfloat16
    return dict(
        HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)), IS_CAUSAL=causal,
        HAS_MASK=has_mask, HAS_KV_LEN=has_kv_len, HAS_DROPOUT=dropout_p > 0.0, UPCAST=upcast,
        PRECISION="ieee" if q.dtype == torch.float32 or upcast else "tf32",
    )


def _device_scope(x: Tensor) -> contextlib.AbstractContextManager:
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()


@dataclass(frozen=True)
class KernelLayout:
    """How one launch indexes (sample, head, row): padded ``(B, H, L, D)`` or packed ``(T, H, D)``.

    ``lq, lk`` are the padded lengths, or for a packed call ``max_seqlen_q/k`` (they size the grids and
    the dropout counter); ``cu_q, cu_k`` the packed call's ``(B + 1,)`` int32 offsets.
    """

    batch: int
    heads: int
    lq: int
    lk: int
    cu_q: Tensor | None = None
    cu_k: Tensor | None = None

    @property
    def varlen(self) -> bool:
        return self.cu_q is not None

    def strides(self, x: Tensor) -> tuple[int, int, int]:
        """``(sample, head, row)`` strides of ``q, k, v, out`` or a gradient (packed: no sample stride)."""
        return (0, x.stride(1), x.stride(0)) if self.varlen else (x.stride(0), x.stride(1), x.stride(2))

    def lse_shape(self, q: Tensor) -> tuple[int, ...]:
        """Log-sum-exp (and backward ``delta``): ``(B, H, Lq)``, packed ``(H, Tq)``."""
        return (self.heads, q.shape[0]) if self.varlen else (self.batch, self.heads, self.lq)

    def lse_strides(self, lse: Tensor) -> tuple[int, int]:
        return (0, lse.stride(0)) if self.varlen else (lse.stride(0), lse.stride(1))

    def offsets(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``cu_seqlens_q/k`` for the kernels (a dummy pointer when padded)."""
        return (self.cu_q, self.cu_k) if self.varlen else (like, like)

    def meta(self, q: Tensor, causal: bool, has_mask: bool, has_kv_len: bool, dropout_p: float) -> dict:
        return dict(_common_meta(q, causal, has_mask, has_kv_len, dropout_p), VARLEN=self.varlen)

    def keys(self) -> tuple[int, int]:
        """Autotuning buckets of the (max) lengths."""
        return length_key(self.lq), length_key(self.lk)


def launch_forward(q: Tensor, k: Tensor, v: Tensor, layout: KernelLayout, key_padding_mask: Tensor | None,
                   key_lengths: Tensor | None, causal: bool, dropout_p: float,
                   scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the forward kernel: ``(out like q, lse (B, H, Lq) or (H, Tq) fp32, seed (1,) int64)``."""
    check_supported(q, k, v)
    q, k, v = _last_dim_contiguous(q), _last_dim_contiguous(k), _last_dim_contiguous(v)
    out = torch.empty_like(q)
    lse = torch.empty(layout.lse_shape(q), device=q.device, dtype=torch.float32)
    if dropout_p > 0.0:
        seed = torch.randint(0, 2**31 - 1, (1,), device=q.device, dtype=torch.int64)
    else:
        seed = torch.zeros(1, device=q.device, dtype=torch.int64)
    mask, kv_len, has_mask, has_kv_len = _key_layout(key_padding_mask, key_lengths, layout.lk, q)
    meta = layout.meta(q, causal, has_mask, has_kv_len, dropout_p)
    grid = lambda cfg: (triton.cdiv(layout.lq, cfg["BLOCK_M"]), layout.batch * layout.heads)  # noqa: E731
    with _device_scope(q):
        attention_forward_kernel[grid](
            q, k, v, out, lse, mask, kv_len, seed, *layout.offsets(q),
            *layout.strides(q), *layout.strides(k), *layout.strides(v), *layout.strides(out),
            mask.stride(0) if has_mask else 0, *layout.lse_strides(lse),
            layout.heads, layout.lq, layout.lk, scale * LOG2E, float(dropout_p), *layout.keys(), **meta)
    return out, lse, seed


def launch_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, seed: Tensor,
                    layout: KernelLayout, key_padding_mask: Tensor | None, key_lengths: Tensor | None,
                    causal: bool, dropout_p: float, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the three backward kernels: ``(dq, dk, dv)`` shaped like ``q, k, v``."""
    q, k, v = _last_dim_contiguous(q), _last_dim_contiguous(k), _last_dim_contiguous(v)
    out, dout = _last_dim_contiguous(out), _last_dim_contiguous(dout)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    delta = torch.empty(layout.lse_shape(q), device=q.device, dtype=torch.float32)
    mask, kv_len, has_mask, has_kv_len = _key_layout(key_padding_mask, key_lengths, layout.lk, q)
    meta = layout.meta(q, causal, has_mask, has_kv_len, dropout_p)
    mask_stride = mask.stride(0) if has_mask else 0
    common = (mask_stride, *layout.lse_strides(lse), layout.heads, layout.lq, layout.lk, scale * LOG2E, scale,
              float(dropout_p), *layout.keys())
    # delta = rowsum(dO * O) over every row: packed, the (Tq, H) rows are one "sample" of Tq rows
    delta_rows, delta_programs = (q.shape[0], layout.heads) if layout.varlen else (layout.lq, layout.batch * layout.heads)
    with _device_scope(q):
        delta_block = 64 if not _INTERPRETED_AT_IMPORT else 16
        attention_backward_delta_kernel[(triton.cdiv(delta_rows, delta_block), delta_programs)](
            out, dout, delta, *layout.strides(out), *layout.strides(dout), layout.heads, delta_rows,
            HEAD_DIM=q.shape[-1], BLOCK_D=meta["BLOCK_D"], BLOCK_M=delta_block)
        attention_backward_dkdv_kernel[lambda cfg: (triton.cdiv(layout.lk, cfg["BLOCK_N"]), layout.batch * layout.heads)](
            q, k, v, dout, lse, delta, dk, dv, mask, kv_len, seed, *layout.offsets(q),
            *layout.strides(q), *layout.strides(k), *layout.strides(v), *layout.strides(dout),
            *layout.strides(dk), *layout.strides(dv), *common, **meta)
        attention_backward_dq_kernel[lambda cfg: (triton.cdiv(layout.lq, cfg["BLOCK_M"]), layout.batch * layout.heads)](
            q, k, v, dout, lse, delta, dq, mask, kv_len, seed, *layout.offsets(q),
            *layout.strides(q), *layout.strides(k), *layout.strides(v), *layout.strides(dout),
            *layout.strides(dq), *common, **meta)
    return dq, dk, dv


def _padded_layout(q: Tensor, k: Tensor) -> KernelLayout:
    return KernelLayout(q.shape[0], q.shape[1], q.shape[2], k.shape[2])


@torch.library.custom_op("polyfuse::flash_attention_forward", mutates_args=())
def flash_attention_forward(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None,
                            key_lengths: Tensor | None, causal: bool, dropout_p: float,
                            scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the forward kernel: ``(out (B, H, Lq, D), lse (B, H, Lq) fp32, seed (1,) int64)``."""
    return launch_forward(q, k, v, _padded_layout(q, k), key_padding_mask, key_lengths, causal, dropout_p, scale)


@flash_attention_forward.register_fake
def _(q, k, v, key_padding_mask, key_lengths, causal, dropout_p, scale):
    batch, heads, lq, _ = q.shape
    return (torch.empty_like(q), q.new_empty((batch, heads, lq), dtype=torch.float32),
            q.new_empty((1,), dtype=torch.int64))


@torch.library.custom_op("polyfuse::flash_attention_backward", mutates_args=())
def flash_attention_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                             seed: Tensor, key_padding_mask: Tensor | None, key_lengths: Tensor | None,
                             causal: bool, dropout_p: float, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the three backward kernels: ``(dq, dk, dv)`` shaped like ``q, k, v``."""
    return launch_backward(dout, q, k, v, out, lse, seed, _padded_layout(q, k), key_padding_mask, key_lengths,
                           causal, dropout_p, scale)


@flash_attention_backward.register_fake
def _(dout, q, k, v, out, lse, seed, key_padding_mask, key_lengths, causal, dropout_p, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: forward saves ``q, k, v, out, lse, seed`` (no ``Lq x Lk`` tensor).

    Padded call: ``apply(q, k, v, key_padding_mask, key_lengths, causal, dropout_p, scale)``. Packed call
    (:mod:`polyfuse.attention.kernels.varlen`): the padding pair is ``None`` and ``cu_seqlens_q/k``,
    ``max_seqlen_q/k`` follow, selecting the ``..._varlen_...`` ops.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, key_lengths: Tensor | None,
                causal: bool, dropout_p: float, scale: float, cu_seqlens_q: Tensor | None = None,
                cu_seqlens_k: Tensor | None = None, max_seqlen_q: int = 0,
                max_seqlen_k: int = 0) -> tuple[Tensor, Tensor]:
        ctx.packed = cu_seqlens_q is not None
        if ctx.packed:
            out, lse, seed = torch.ops.polyfuse.flash_attention_varlen_forward(
                q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, dropout_p, scale)
        else:
            out, lse, seed = torch.ops.polyfuse.flash_attention_forward(
                q, k, v, key_padding_mask, key_lengths, causal, dropout_p, scale)
        ctx.save_for_backward(q, k, v, out, lse, seed, key_padding_mask, key_lengths, cu_seqlens_q, cu_seqlens_k)
        ctx.max_seqlen, ctx.causal, ctx.dropout_p, ctx.scale = (max_seqlen_q, max_seqlen_k), causal, dropout_p, scale
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout: Tensor, dlse: Tensor | None):
        q, k, v, out, lse, seed, key_padding_mask, key_lengths, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
        if ctx.packed:
            dq, dk, dv = torch.ops.polyfuse.flash_attention_varlen_backward(
                dout, q, k, v, out, lse, seed, cu_seqlens_q, cu_seqlens_k, *ctx.max_seqlen, ctx.causal,
                ctx.dropout_p, ctx.scale)
        else:
            dq, dk, dv = torch.ops.polyfuse.flash_attention_backward(
                dout, q, k, v, out, lse, seed, key_padding_mask, key_lengths, ctx.causal, ctx.dropout_p, ctx.scale)
        return dq, dk, dv, *([None] * 9)


def triton_attention(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None,
                     key_lengths: Tensor | None = None, *, causal: bool = False, dropout_p: float = 0.0,
                     scale: float | None = None) -> tuple[Tensor, Tensor]:
    """Fused attention: ``(out (B, H, Lq, D), lse (B, H, Lq))``.

    ``key_padding_mask (B, Lk)`` bool (True = real key) or ``key_lengths (B,)`` (real keys first);
    ``lse`` is the natural-log log-sum-exp of the allowed scaled scores, ``+inf`` for query rows
    with no allowed key (whose output and gradients are zero).
    """
    check_supported(q, k, v)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return FlashAttentionFunction.apply(q, k, v, key_padding_mask, key_lengths, causal, float(dropout_p), scale)

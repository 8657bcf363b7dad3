"""The fused Triton attention on packed (varlen) sequences, as custom ops and an autograd Function.

Same kernels as the padded path (:mod:`polyfuse.attention.kernels.function`) with ``VARLEN``: q
``(Tq, H, D)``, k/v ``(Tk, H, D)``, sample ``b`` owning rows ``cu_seqlens[b]:cu_seqlens[b + 1]`` (the
FlashAttention varlen convention). The grid is ``(cdiv(max_seqlen, BLOCK), B * H)``; each program reads
its sample's offsets and length and skips blocks past it, so no work is spent on padding. Causal is
aligned to each sample's own last key. A sample with no key gives zero output and zero gradients.

Registered as ``polyfuse::flash_attention_varlen_forward`` / ``..._backward`` with fake impls, so
``torch.compile`` traces through :class:`~polyfuse.attention.kernels.function.FlashAttentionFunction`
(which selects these ops for a packed call; ``max_seqlen`` are ints, as in FlashAttention's varlen API).
"""

from __future__ import annotations

import torch
from torch import Tensor

from polyfuse.attention.args import AttentionArgs
from polyfuse.attention.kernels.function import (
    FlashAttentionFunction,
    KernelLayout,
    check_supported,
    launch_backward,
    launch_forward,
)


def _layout(q: Tensor, cu_q: Tensor, cu_k: Tensor, max_seqlen_q: int, max_seqlen_k: int) -> KernelLayout:
    return KernelLayout(cu_q.numel() - 1, q.shape[1], max_seqlen_q, max_seqlen_k, cu_q, cu_k)


@torch.library.custom_op("polyfuse::flash_attention_varlen_forward", mutates_args=())
def flash_attention_varlen_forward(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
                                   max_seqlen_q: int, max_seqlen_k: int, causal: bool, dropout_p: float,
                                   scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(out (Tq, H, D), lse (H, Tq) fp32, seed (1,) int64)``; offsets must be validated int32."""
    layout = _layout(q, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    return launch_forward(q, k, v, layout, None, None, causal, dropout_p, scale)


@flash_attention_varlen_forward.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, dropout_p, scale):
    return (torch.empty_like(q), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32),
            q.new_empty((1,), dtype=torch.int64))


@torch.library.custom_op("polyfuse::flash_attention_varlen_backward", mutates_args=())
def flash_attention_varlen_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                                    seed: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor, max_seqlen_q: int,
                                    max_seqlen_k: int, causal: bool, dropout_p: float,
                                    scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` shaped like ``q, k, v``."""
    layout = _layout(q, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    return launch_backward(dout, q, k, v, out, lse, seed, layout, None, None, causal, dropout_p, scale)


@flash_attention_varlen_backward.register_fake
def _(dout, q, k, v, out, lse, seed, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, dropout_p,
      scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def triton_varlen_attention(args: AttentionArgs) -> tuple[Tensor, Tensor]:
    """Fused packed attention for a packed :class:`AttentionArgs` (validated by
    :func:`polyfuse.attention.varlen_dispatch.validate_varlen`): ``(out (Tq, H, D), lse (H, Tq))``.

    ``lse`` is the natural-log log-sum-exp, ``+inf`` for query rows with no allowed key.
    """
    check_supported(args.q, args.k, args.v)
    cu_q, cu_k = (cu.to(device=args.q.device, dtype=torch.int32).contiguous()
                  for cu in (args.cu_seqlens_q, args.cu_seqlens_k))
    return FlashAttentionFunction.apply(args.q, args.k, args.v, None, None, args.causal, float(args.dropout_p),
                                        args.softmax_scale, cu_q, cu_k, int(args.max_seqlen_q), int(args.max_seqlen_k))

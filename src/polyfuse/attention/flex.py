"""PyTorch FlexAttention with a block mask built from the key padding mask.

FlexAttention (PyTorch team, 2024, "FlexAttention: The Flexibility of PyTorch with the Performance
of FlashAttention") compiles a fused kernel from a ``mask_mod``; its ``BlockMask`` lets it skip
key blocks that are all padding. It is the strongest off-the-shelf competitor for masked attention
on GPU and a fallback when the Triton kernels do not apply.

Limits (torch 2.14): no attention dropout; on CPU the compiled kernel is inference only (no
backward, no log-sum-exp). Fully masked query rows return zeros.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import AuxRequest, BlockMask, create_block_mask, flex_attention

from polyfuse.attention.args import AttentionArgs
from polyfuse.masking import zero_invalid

_MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def padding_mask_mod(key_padding_mask: Tensor | None, lq: int, lk: int, causal: bool) -> _MaskMod:
    """``mask_mod(b, h, q_idx, kv_idx)``: key is real (and, if causal, ``kv_idx <= q_idx + Lk - Lq``)."""
    shift = lk - lq

    def allowed(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        ok = kv_idx >= 0
        if key_padding_mask is not None:
            ok = ok & key_padding_mask[b, kv_idx]
        if causal:
            ok = ok & (kv_idx <= q_idx + shift)
        return ok

    return allowed


@functools.lru_cache(maxsize=32)
def _unpadded_block_mask(lq: int, lk: int, causal: bool, device: torch.device) -> BlockMask:
    return create_block_mask(padding_mask_mod(None, lq, lk, causal), None, None, lq, lk, device=device)


def padding_block_mask(key_padding_mask: Tensor | None, lq: int, lk: int, *, causal: bool,
                       device: torch.device) -> BlockMask | None:
    """The ``BlockMask`` for a ``(B, Lk)`` padding mask (rebuilt per batch; cached when there is none)."""
    if key_padding_mask is None:
        return _unpadded_block_mask(lq, lk, causal, device) if causal else None
    return create_block_mask(padding_mask_mod(key_padding_mask, lq, lk, causal), key_padding_mask.shape[0], None,
                             lq, lk, device=device)


@functools.cache
def _compiled_flex(device_type: str) -> Callable[..., object]:
    """One compiled FlexAttention per device type.

    CPU compiles static shapes: torch 2.14's dynamic-shape CPU template fails to build
    (``cur_qSplitSize1`` undeclared in the generated C++); each new CPU shape recompiles instead.
    """
    return torch.compile(flex_attention, dynamic=False if device_type == "cpu" else None)


def flex_padded_attention(args: AttentionArgs, *, return_lse: bool = False,
                          compiled: bool = True) -> tuple[Tensor, Tensor | None]:
    """``(out (B, H, Lq, D), lse (B, H, Lq) or None)`` for ``args`` (see :class:`AttentionArgs`);
    ``compiled=False`` runs the unfused eager path."""
    args = args.with_mask()
    q, k, v, key_padding_mask, causal, scale = args.q, args.k, args.v, args.key_padding_mask, args.causal, args.scale
    if args.dropout_p > 0.0:
        raise ValueError("attention backend 'flex' has no dropout; use 'triton', 'sdpa' or 'reference'")
    cpu = q.device.type == "cpu"
    if cpu and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise NotImplementedError("attention backend 'flex' has no backward on CPU in torch "
                                  f"{torch.__version__}; use 'sdpa', 'reference' or 'auto'")
    lq, lk = q.shape[-2], k.shape[-2]
    sample_has_key = None
    if key_padding_mask is not None:  # an absent modality: attend to all keys, zero the output (no NaN risk)
        sample_has_key = key_padding_mask.any(-1)
        key_padding_mask = key_padding_mask | ~sample_has_key[:, None]
    block_mask = padding_block_mask(key_padding_mask, lq, lk, causal=causal, device=q.device)
    want_lse = return_lse and not (cpu and compiled)  # compiled CPU flex cannot return the lse
    aux = AuxRequest(lse=True) if want_lse else None
    if torch.compiler.is_compiling():  # the surrounding torch.compile fuses it
        result = flex_attention(q, k, v, block_mask=block_mask, scale=scale, return_aux=aux)
    elif compiled:
        result = _compiled_flex(q.device.type)(q, k, v, block_mask=block_mask, scale=scale, return_aux=aux)
    else:
        with warnings.catch_warnings():  # the unfused path was asked for; do not warn about it
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            result = flex_attention(q, k, v, block_mask=block_mask, scale=scale, return_aux=aux)
    out, lse = (result[0], result[1].lse) if want_lse else (result, None)
    if sample_has_key is not None:
        out = zero_invalid(out, sample_has_key)
    return out, lse

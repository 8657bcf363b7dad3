"""PyTorch FlexAttention with a block mask built from the key padding mask.

FlexAttention (PyTorch team, 2024, "FlexAttention: The Flexibility of PyTorch with the Performance
of FlashAttention") compiles a fused kernel from a ``mask_mod``; its ``BlockMask`` lets it skip
key blocks that are all padding. It is the strongest off-the-shelf competitor for masked attention
on GPU and a fallback when the Triton kernels do not apply.

Packed (varlen) calls run natively as one sequence (``B = 1``, ``L = T``) under a *document mask*:
query row ``i`` sees key row ``j`` only when both belong to the same sample (block-diagonal), and,
if causal, ``j``'s position in its sample is ``<= i``'s + that sample's ``Lk - Lq``. The block mask
skips every off-diagonal block, so the work is that of the real tokens.

Limits (torch 2.14): no attention dropout; on CPU the compiled kernel is inference only (no
backward, no log-sum-exp) and compiles static shapes (a new packed length recompiles). Fully
masked query rows return zeros.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import AuxRequest, BlockMask, create_block_mask, flex_attention

from polyfuse.attention.args import AttentionArgs
from polyfuse.attention.varlen import position_ids, sequence_ids
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
    _check_limits(args)
    lq, lk = q.shape[-2], k.shape[-2]
    sample_has_key = None
    if key_padding_mask is not None:  # an absent modality: attend to all keys, zero the output (no NaN risk)
        sample_has_key = key_padding_mask.any(-1)
        key_padding_mask = key_padding_mask | ~sample_has_key[:, None]
    block_mask = padding_block_mask(key_padding_mask, lq, lk, causal=causal, device=q.device)
    out, lse = _run_flex(q, k, v, block_mask, scale, return_lse=return_lse, compiled=compiled)
    if sample_has_key is not None:
        out = zero_invalid(out, sample_has_key)
    return out, lse


def _check_limits(args: AttentionArgs) -> None:
    """Raise for what flex cannot do: dropout, and a backward on CPU."""
    if args.dropout_p > 0.0:
        raise ValueError("attention backend 'flex' has no dropout; use 'triton', 'sdpa' or 'reference'")
    if (args.q.device.type == "cpu" and torch.is_grad_enabled()
            and any(t.requires_grad for t in (args.q, args.k, args.v))):
        raise NotImplementedError("attention backend 'flex' has no backward on CPU in torch "
                                  f"{torch.__version__}; use 'sdpa', 'reference' or 'auto'")


def _run_flex(q: Tensor, k: Tensor, v: Tensor, block_mask: BlockMask | None, scale: float | None, *,
              return_lse: bool, compiled: bool) -> tuple[Tensor, Tensor | None]:
    """``(out, lse or None)`` of one FlexAttention call: fused inside a surrounding ``torch.compile``,
    else compiled (``compiled=True``) or the unfused eager path."""
    if not torch.is_grad_enabled():  # flex refuses CPU inputs that require grad even under no_grad
        q, k, v = q.detach(), k.detach(), v.detach()
    want_lse = return_lse and not (q.device.type == "cpu" and compiled)  # compiled CPU flex has no lse
    aux = AuxRequest(lse=True) if want_lse else None
    if torch.compiler.is_compiling():  # the surrounding torch.compile fuses it
        result = flex_attention(q, k, v, block_mask=block_mask, scale=scale, return_aux=aux)
    elif compiled:
        result = _compiled_flex(q.device.type)(q, k, v, block_mask=block_mask, scale=scale, return_aux=aux)
    else:
        with warnings.catch_warnings():  # the unfused path was asked for; do not warn about it
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            result = flex_attention(q, k, v, block_mask=block_mask, scale=scale, return_aux=aux)
    return (result[0], result[1].lse) if want_lse else (result, None)


def document_mask_mod(cu_seqlens_q: Tensor, cu_seqlens_k: Tensor, causal: bool) -> _MaskMod:
    """``mask_mod`` over a packed sequence: rows of the same sample only (block-diagonal), and if causal
    key position ``<=`` query position ``+ (Lk_b - Lq_b)`` within sample ``b``."""
    sample_q, sample_k = sequence_ids(cu_seqlens_q), sequence_ids(cu_seqlens_k)
    position_q, position_k = position_ids(cu_seqlens_q), position_ids(cu_seqlens_k)
    shift = ((cu_seqlens_k[1:] - cu_seqlens_k[:-1]) - (cu_seqlens_q[1:] - cu_seqlens_q[:-1])).to(torch.long)

    def allowed(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        ok = sample_q[q_idx] == sample_k[kv_idx]
        if causal:
            ok = ok & (position_k[kv_idx] <= position_q[q_idx] + shift[sample_q[q_idx]])
        return ok

    return allowed


def flex_varlen_attention(args: AttentionArgs, *, compiled: bool = True) -> Tensor:
    """Packed attention ``(Tq, H, D)`` for a packed, validated ``args`` (see :class:`AttentionArgs`) under a
    document mask. Query rows with no allowed key (a sample without keys, early causal rows when
    ``Lq_b > Lk_b``) give zeros."""
    _check_limits(args)
    q, k, v = args.q, args.k, args.v
    total_q, total_k = q.shape[0], k.shape[0]
    if total_q == 0 or total_k == 0:
        return q.new_zeros(total_q, q.shape[1], v.shape[-1])
    mask_mod = document_mask_mod(args.cu_seqlens_q.to(q.device), args.cu_seqlens_k.to(q.device), args.causal)
    block_mask = create_block_mask(mask_mod, None, None, total_q, total_k, device=q.device)
    as_one = [t.transpose(0, 1)[None] for t in (q, k, v)]  # (T, H, D) -> (1, H, T, D)
    out, _ = _run_flex(*as_one, block_mask, args.scale, return_lse=False, compiled=compiled)
    return out[0].transpose(0, 1)

"""Packed (varlen) attention calls: validation, the native paths, and the padded fallback.

:func:`polyfuse.attention.attention` sends calls with ``cu_seqlens_q/k`` here; they become one packed
:class:`~polyfuse.attention.args.AttentionArgs`. Native paths take the packed tensors as they are:

- ``triton``: the fused kernels with ``VARLEN`` (:mod:`polyfuse.attention.kernels.varlen`);
- ``flex``: FlexAttention under a document (block-diagonal) mask (:func:`polyfuse.attention.flex.flex_varlen_attention`).

Every other backend (``reference``, ``sdpa``), and any call with ``need_weights``, runs on the padded
layout (:meth:`polyfuse.attention.varlen.Packing.pad`) with a key padding mask and is packed again, so
every backend accepts the same call and gives the same answer. Causal calls whose samples have
different key-minus-query offsets run sample by sample there (the padded layout aligns causal to the
longest sample). ``auto`` chooses, checks and measures among ``padded`` (the padded fallback under
``auto``) and the native paths (:mod:`polyfuse.attention.auto_varlen`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from polyfuse.attention import auto_varlen
from polyfuse.attention.args import AttentionArgs
from polyfuse.attention.varlen import Packing, seqlens, validate_cu_seqlens


def _max_seqlen(cu_seqlens: Tensor, given: int | None, name: str) -> int:
    """``given``, or the longest sample; raises naming ``name`` and the sample when ``given`` is shorter."""
    lengths = seqlens(cu_seqlens)
    longest = int(lengths.max()) if lengths.numel() else 0
    if given is not None and given < longest:
        sample = int(lengths.argmax())
        raise ValueError(f"{name}={given} is shorter than sample {sample} ({longest} tokens); pass the longest "
                         "sample's length (or None to compute it)")
    return longest if given is None else int(given)


def validate_varlen(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor) -> None:
    """Raise with the offending shape unless q ``(Tq, H, D)``, k/v ``(Tk, H, D)`` match their offsets."""
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"a packed attention call expects q, k, v as (T, H, D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[1] != k.shape[1] or k.shape[:2] != v.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: expected shared heads, "
                         "equal q/k head dims and equal k/v token counts")
    validate_cu_seqlens(cu_seqlens_q, q.shape[0], "cu_seqlens_q")
    validate_cu_seqlens(cu_seqlens_k, k.shape[0], "cu_seqlens_k")
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError(f"cu_seqlens_q has {cu_seqlens_q.numel() - 1} samples, cu_seqlens_k "
                         f"{cu_seqlens_k.numel() - 1}")


def packed_args(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor | None, cu_seqlens_k: Tensor | None,
                max_seqlen_q: int | None, max_seqlen_k: int | None, *, causal: bool, dropout_p: float,
                scale: float | None) -> AttentionArgs:
    """The validated packed :class:`AttentionArgs` (``cu_seqlens_k`` defaults to ``cu_seqlens_q`` and back;
    ``max_seqlen_q/k`` to the longest samples)."""
    cu_seqlens_q = cu_seqlens_k if cu_seqlens_q is None else cu_seqlens_q
    cu_seqlens_k = cu_seqlens_q if cu_seqlens_k is None else cu_seqlens_k
    validate_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k)
    cu_seqlens_q, cu_seqlens_k = cu_seqlens_q.to(q.device), cu_seqlens_k.to(q.device)  # offsets may come from the host
    return AttentionArgs(q, k, v, causal=causal, dropout_p=dropout_p, scale=scale, cu_seqlens_q=cu_seqlens_q,
                         cu_seqlens_k=cu_seqlens_k, max_seqlen_q=_max_seqlen(cu_seqlens_q, max_seqlen_q, "max_seqlen_q"),
                         max_seqlen_k=_max_seqlen(cu_seqlens_k, max_seqlen_k, "max_seqlen_k"))


def _triton_varlen(args: AttentionArgs) -> Tensor:
    try:  # lazy: TRITON_INTERPRET is read when the kernels are defined
        from polyfuse.attention.kernels.varlen import triton_varlen_attention
    except ImportError as error:
        raise RuntimeError(f"attention backend 'triton' needs the triton package ({error}); use 'sdpa'") from error
    return triton_varlen_attention(args)[0]


def _flex_varlen(args: AttentionArgs) -> Tensor:
    from polyfuse.attention.flex import flex_varlen_attention  # lazy: importing FlexAttention is slow

    return flex_varlen_attention(args)


NATIVE_VARLEN: dict[str, Callable[[AttentionArgs], Tensor]] = {"triton": _triton_varlen, "flex": _flex_varlen}
"""Backends that run a packed call without padding it (the others use :func:`padded_fallback`)."""


def varlen_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor | None, cu_seqlens_k: Tensor | None,
                     max_seqlen_q: int | None, max_seqlen_k: int | None, *, causal: bool, dropout_p: float,
                     scale: float | None, backend: str, need_weights: bool) -> Tensor | tuple[Tensor, Tensor]:
    """Packed attention (see :func:`polyfuse.attention.attention`); ``cu_seqlens_k`` defaults to ``cu_seqlens_q``."""
    args = packed_args(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=causal,
                       dropout_p=dropout_p, scale=scale)
    if need_weights:
        return padded_fallback(args, backend, need_weights=True)
    if backend == "auto":
        backend = auto_varlen.choose_packed_backend(args, run_packed)
    return run_packed(backend, args)


def run_packed(name: str, args: AttentionArgs) -> Tensor:
    """A packed call through ``name``: a native path (:data:`NATIVE_VARLEN`), ``padded`` (the padded fallback
    under ``auto``'s padded choice: what ``auto`` chooses among) or another backend's padded fallback."""
    native = NATIVE_VARLEN.get(name)
    if native is not None:
        return native(args)
    return padded_fallback(args, "auto" if name == auto_varlen.PADDED else name)


def padded_fallback(args: AttentionArgs, backend: str, *, need_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """A packed call on the padded layout through ``backend``: ``out (Tq, H, D)`` (and with ``need_weights``
    the probabilities padded to ``(B, H, max_seqlen_q, max_seqlen_k)``)."""
    from polyfuse.attention import attention

    q, k, v, cu_seqlens_q, cu_seqlens_k = args.q, args.k, args.v, args.cu_seqlens_q, args.cu_seqlens_k
    lq, lk = args.max_seqlen_q, args.max_seqlen_k
    q_lengths, k_lengths = seqlens(cu_seqlens_q), seqlens(cu_seqlens_k)
    dropout_p, scale, causal = args.dropout_p, args.scale, args.causal
    # causal is aligned to each sample's own last key; the padded layout aligns to the longest, so the
    # two agree only when every sample has the same key-minus-query offset as the padded shapes
    if causal and not bool(((k_lengths - q_lengths) == (lk - lq)).all()):
        return _per_sample(q, k, v, cu_seqlens_q, cu_seqlens_k, lq, lk, dropout_p=dropout_p, scale=scale,
                           backend=backend, need_weights=need_weights)
    # one packing per side: (T, H, D) <-> (B, L, H, D), the keys' mask for the padded call
    q_packing, k_packing = Packing.from_lengths(q_lengths, lq), Packing.from_lengths(k_lengths, lk)
    qp, kp, vp = (packing.pad(x).transpose(1, 2) for packing, x in ((q_packing, q), (k_packing, k), (k_packing, v)))
    result = attention(qp, kp, vp, k_packing.mask(), causal=causal, dropout_p=dropout_p, scale=scale, backend=backend,
                       need_weights=need_weights)
    out, probs = result if need_weights else (result, None)
    packed = q_packing.unpad(out.transpose(1, 2))
    return (packed, probs) if need_weights else packed


def _per_sample(q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor, cu_k: Tensor, lq: int, lk: int, *, dropout_p: float,
                scale: float | None, backend: str, need_weights: bool) -> Tensor | tuple[Tensor, Tensor]:
    """Causal packed attention one sample at a time (per-sample causal offsets the padded layout cannot express)."""
    from polyfuse.attention import attention

    outs, maps = [], []
    bounds_q, bounds_k = cu_q.tolist(), cu_k.tolist()
    for b in range(len(bounds_q) - 1):
        qs = q[bounds_q[b]:bounds_q[b + 1]].transpose(0, 1)[None]
        ks = k[bounds_k[b]:bounds_k[b + 1]].transpose(0, 1)[None]
        vs = v[bounds_k[b]:bounds_k[b + 1]].transpose(0, 1)[None]
        if qs.shape[2] == 0:
            maps.append(q.new_zeros(q.shape[1], lq, lk))
            continue
        if ks.shape[2] == 0:  # no key at all: zeros, as for a fully masked row
            outs.append(torch.zeros_like(qs[0].transpose(0, 1)))
            maps.append(q.new_zeros(q.shape[1], lq, lk))
            continue
        result = attention(qs, ks, vs, causal=True, dropout_p=dropout_p, scale=scale, backend=backend,
                           need_weights=need_weights)
        out, probs = result if need_weights else (result, None)
        outs.append(out[0].transpose(0, 1))
        if need_weights:
            full = q.new_zeros(q.shape[1], lq, lk)
            full[:, : probs.shape[2], : probs.shape[3]] = probs[0]
            maps.append(full)
    packed = torch.cat(outs) if outs else q.new_zeros(0, q.shape[1], v.shape[-1])
    return (packed, torch.stack(maps)) if need_weights else packed

"""Packed (varlen) attention calls: validation and the padded fallback every backend can run.

:func:`polyfuse.attention.attention` sends calls with ``cu_seqlens_q/k`` here. A backend with a native
varlen path takes the packed tensors as they are; every other backend runs on the padded layout
(:func:`polyfuse.attention.varlen.pad_heads`) with a key padding mask and the result is packed again,
so every backend accepts the same call and gives the same answer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polyfuse.attention.varlen import pad_heads, unpad_heads, validate_cu_seqlens


def _max_seqlen(cu_seqlens: Tensor, given: int | None) -> int:
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    longest = int(lengths.max()) if lengths.numel() else 0
    if given is not None and given < longest:
        raise ValueError(f"max_seqlen {given} is shorter than the longest packed sample ({longest})")
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


def varlen_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor | None, cu_seqlens_k: Tensor | None,
                     max_seqlen_q: int | None, max_seqlen_k: int | None, *, causal: bool, dropout_p: float,
                     scale: float | None, backend: str, need_weights: bool) -> Tensor | tuple[Tensor, Tensor]:
    """Packed attention (see :func:`polyfuse.attention.attention`); ``cu_seqlens_k`` defaults to ``cu_seqlens_q``."""
    from polyfuse.attention import attention

    cu_seqlens_q = cu_seqlens_k if cu_seqlens_q is None else cu_seqlens_q
    cu_seqlens_k = cu_seqlens_q if cu_seqlens_k is None else cu_seqlens_k
    validate_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k)
    lq, lk = _max_seqlen(cu_seqlens_q, max_seqlen_q), _max_seqlen(cu_seqlens_k, max_seqlen_k)
    q_lengths, k_lengths = cu_seqlens_q[1:] - cu_seqlens_q[:-1], cu_seqlens_k[1:] - cu_seqlens_k[:-1]
    # causal is aligned to each sample's own last key; the padded layout aligns to the longest, so the
    # two agree only when every sample has the same key-minus-query offset as the padded shapes
    if causal and not bool(((k_lengths - q_lengths) == (lk - lq)).all()):
        return _per_sample(q, k, v, cu_seqlens_q, cu_seqlens_k, lq, lk, dropout_p=dropout_p, scale=scale,
                           backend=backend, need_weights=need_weights)
    qp, _ = pad_heads(q, cu_seqlens_q, lq)
    kp, key_mask = pad_heads(k, cu_seqlens_k, lk)
    vp, _ = pad_heads(v, cu_seqlens_k, lk)
    result = attention(qp, kp, vp, key_mask, causal=causal, dropout_p=dropout_p, scale=scale, backend=backend,
                       need_weights=need_weights)
    out, probs = result if need_weights else (result, None)
    packed = unpad_heads(out, cu_seqlens_q)
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

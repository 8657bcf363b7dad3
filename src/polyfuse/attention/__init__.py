"""One attention entry point for the whole library.

Every attention in polyfuse (encoders, fusions, decoders) calls :func:`attention`; the backend is a
string chosen per call or globally (:func:`set_default_backend`, ``attention_backend`` in run configs).
Layers (:class:`polyfuse.layers.MultiHeadAttention`) read the global default once, when they are
built. Every backend takes one :class:`AttentionArgs`:

- ``reference``: plain PyTorch in fp32, the oracle.
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with the mask in the form it takes.
- ``flex``: PyTorch FlexAttention with a block mask built from the padding mask.
- ``triton``: polyfuse's fused kernels (:mod:`polyfuse.attention.kernels`), CUDA or the interpreter.
- ``auto``: the fastest correct one for the device and case, measured (:mod:`polyfuse.attention.auto`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from torch import Tensor
from torch.nn.attention import SDPBackend

from polyfuse.attention import auto as auto_selection
from polyfuse.attention.args import AttentionArgs
from polyfuse.attention.masks import validate_inputs
from polyfuse.attention.reference import reference_attention
from polyfuse.attention.sdpa import sdpa_attention
from polyfuse.attention.weights import probabilities_from_lse

__all__ = ["attention", "AttentionArgs", "available_backends", "set_default_backend", "get_default_backend",
           "using_backend", "MultiHeadAttention"]

_BACKENDS = ("reference", "sdpa", "flex", "triton", "auto")
_default_backend = "auto"


def available_backends() -> list[str]:
    """Names accepted by ``backend=``."""
    return list(_BACKENDS)


def _check_name(name: str) -> str:
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; valid: {', '.join(_BACKENDS)}")
    return name


def set_default_backend(name: str) -> None:
    """Backend used when a call passes ``backend=None``; layers built afterwards take it (see
    :func:`using_backend`)."""
    global _default_backend
    _default_backend = _check_name(name)


def get_default_backend() -> str:
    """The backend used when a call passes ``backend=None``."""
    return _default_backend


@contextmanager
def using_backend(name: str) -> Iterator[None]:
    """Within the block the default backend is ``name`` (layers built there keep it); the previous
    default is restored afterwards."""
    previous = get_default_backend()
    set_default_backend(name)
    try:
        yield
    finally:
        set_default_backend(previous)


def _triton(args: AttentionArgs) -> tuple[Tensor, Tensor]:
    try:  # lazy: TRITON_INTERPRET is read when the kernels are defined
        from polyfuse.attention.kernels import triton_attention
    except ImportError as error:
        raise RuntimeError(f"attention backend 'triton' needs the triton package ({error}); "
                           "use 'auto' or 'sdpa'") from error

    return triton_attention(args.q, args.k, args.v, args.key_padding_mask, args.key_lengths, causal=args.causal,
                            dropout_p=args.dropout_p, scale=args.scale)


def _run_backend(name: str, args: AttentionArgs, need_lse: bool) -> tuple[Tensor, Tensor | None]:
    """``(out, lse or None)`` from one named backend (never ``auto``)."""
    if name == "triton":
        return _triton(args)
    if name == "flex":
        from polyfuse.attention.flex import flex_padded_attention  # lazy: importing FlexAttention is slow

        return flex_padded_attention(args, return_lse=need_lse)
    if name in ("sdpa", "sdpa-math"):  # "sdpa-math" (SDPA pinned to its math kernel) is an auto candidate on CPU
        return sdpa_attention(args, sdpa_backends=[SDPBackend.MATH] if name == "sdpa-math" else None), None
    return reference_attention(args)[0], None


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None = None,
    *,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    backend: str | None = None,
    need_weights: bool = False,
    key_lengths: Tensor | None = None,
    cu_seqlens_q: Tensor | None = None,
    cu_seqlens_k: Tensor | None = None,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Scaled dot-product attention with a key padding mask, or on packed (varlen) sequences.

    Args:
        q: ``(B, H, Lq, D)``; k, v: ``(B, H, Lk, D)``.
        key_padding_mask: ``(B, Lk)`` bool, ``True`` = real key. A query row whose keys are all
            masked (an absent modality) returns zeros, never NaN, with zero gradients.
        causal: query ``i`` sees keys ``j <= i + (Lk - Lq)`` (aligned to the last key).
        dropout_p: attention dropout (not supported by ``flex``).
        scale: softmax scale, default ``D ** -0.5``.
        backend: one of :func:`available_backends`; ``None`` uses the global default.
        need_weights: also return the probabilities ``(B, H, Lq, Lk)`` (before dropout), rebuilt
            from the log-sum-exp when the backend saved one, else by the reference path. They are
            differentiable only with ``backend="reference"``.
        key_lengths: ``(B,)`` number of real keys per sample (stored first), instead of a mask.
        cu_seqlens_q, cu_seqlens_k: packed (varlen) call: ``q (Tq, H, D)``, ``k, v (Tk, H, D)`` hold the
            samples one after another, sample ``b`` in rows ``cu_seqlens[b]:cu_seqlens[b + 1]``
            (:class:`polyfuse.attention.varlen.Packing`); attention stays within a sample, causal
            per sample. ``max_seqlen_q/k`` are the longest samples (computed when omitted).

    Returns:
        ``(B, H, Lq, D)`` (packed: ``(Tq, H, D)``), or ``(out, probs)`` when ``need_weights`` (packed:
        ``probs`` padded to ``(B, H, max_seqlen_q, max_seqlen_k)``).
    """
    name = _check_name(_default_backend if backend is None else backend)
    if cu_seqlens_q is not None or cu_seqlens_k is not None:
        if key_padding_mask is not None or key_lengths is not None:
            raise ValueError("a packed (cu_seqlens) call takes no key_padding_mask or key_lengths")
        from polyfuse.attention.varlen_dispatch import varlen_attention

        return varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=causal,
                                dropout_p=dropout_p, scale=scale, backend=name, need_weights=need_weights)
    validate_inputs(q, k, v, key_padding_mask, key_lengths)
    args = AttentionArgs(q, k, v, key_padding_mask, key_lengths, causal, dropout_p, scale)
    if name == "reference" and need_weights:
        return reference_attention(args)
    if name == "auto":
        def run(chosen: str, q_: Tensor, k_: Tensor, v_: Tensor) -> Tensor:
            return _run_backend(chosen, args.with_qkv(q_, k_, v_), False)[0]

        name = auto_selection.choose_backend(q, k, v, has_mask=args.has_mask, causal=causal, dropout_p=dropout_p,
                                             run=run)
    out, lse = _run_backend(name, args, need_weights)
    if not need_weights:
        return out
    if lse is not None:
        probs = probabilities_from_lse(q, k, lse, args.padding_mask(), causal=causal, scale=scale)
    else:  # detached and without dropout (which would draw random numbers): only the map is wanted
        probs = reference_attention(replace(args, q=q.detach(), k=k.detach(), v=v.detach(), dropout_p=0.0))[1]
    return out, probs


def __getattr__(name: str) -> object:
    """``polyfuse.attention.MultiHeadAttention``: documented alias of :class:`polyfuse.layers.MultiHeadAttention`
    (the layer moved to :mod:`polyfuse.layers`; resolved lazily so this package imports nothing above it)."""
    if name == "MultiHeadAttention":
        from polyfuse.layers.attention import MultiHeadAttention

        return MultiHeadAttention
    raise AttributeError(f"module 'polyfuse.attention' has no attribute {name!r}")

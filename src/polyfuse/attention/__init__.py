"""One attention entry point for the whole library.

Every attention in polyfuse (encoders, fusions, decoders) calls :func:`attention`; the backend is a
string chosen per call or globally (:func:`set_default_backend`, ``attention.backend`` in configs):

- ``reference``: plain PyTorch in fp32, the oracle.
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with the mask in the form it takes.
- ``flex``: PyTorch FlexAttention with a block mask built from the padding mask.
- ``triton``: polyfuse's fused kernels (:mod:`polyfuse.attention.kernels`), CUDA or the interpreter.
- ``auto``: the fastest correct one for the device and case, measured (:mod:`polyfuse.attention.auto`).
"""

from __future__ import annotations

from torch import Tensor
from torch.nn.attention import SDPBackend

from polyfuse.attention import auto as auto_selection
from polyfuse.attention.masks import lengths_to_padding_mask, validate_inputs
from polyfuse.attention.reference import reference_attention
from polyfuse.attention.sdpa import sdpa_attention
from polyfuse.attention.weights import probabilities_from_lse

__all__ = ["attention", "available_backends", "set_default_backend", "get_default_backend", "MultiHeadAttention"]

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
    """Backend used when a call passes ``backend=None`` (modules default to this)."""
    global _default_backend
    _default_backend = _check_name(name)


def get_default_backend() -> str:
    """The backend used when a call passes ``backend=None``."""
    return _default_backend


def _run_backend(name: str, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None,
                 key_lengths: Tensor | None, causal: bool, dropout_p: float, scale: float | None,
                 need_lse: bool) -> tuple[Tensor, Tensor | None]:
    """``(out, lse or None)`` from one named backend (never ``auto``)."""
    if name == "triton":
        try:  # lazy: TRITON_INTERPRET is read when the kernels are defined
            from polyfuse.attention.kernels import triton_attention
        except ImportError as error:
            raise RuntimeError(f"attention backend 'triton' needs the triton package ({error}); "
                               "use 'auto' or 'sdpa'") from error

        return triton_attention(q, k, v, key_padding_mask, key_lengths, causal=causal, dropout_p=dropout_p,
                                scale=scale)
    if key_lengths is not None:
        key_padding_mask = lengths_to_padding_mask(key_lengths, k.shape[2])
    if name == "flex":
        from polyfuse.attention.flex import flex_padded_attention  # lazy: importing FlexAttention is slow

        return flex_padded_attention(q, k, v, key_padding_mask, causal=causal, dropout_p=dropout_p, scale=scale,
                                     return_lse=need_lse)
    if name in ("sdpa", "sdpa-math"):  # "sdpa-math" (SDPA pinned to its math kernel) is an auto candidate on CPU
        pinned = [SDPBackend.MATH] if name == "sdpa-math" else None
        return sdpa_attention(q, k, v, key_padding_mask, causal=causal, dropout_p=dropout_p, scale=scale,
                              sdpa_backends=pinned), None
    out, _ = reference_attention(q, k, v, key_padding_mask, causal=causal, dropout_p=dropout_p, scale=scale)
    return out, None


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
) -> Tensor | tuple[Tensor, Tensor]:
    """Scaled dot-product attention with a key padding mask.

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

    Returns:
        ``(B, H, Lq, D)``, or ``(out, probs)`` when ``need_weights``.
    """
    name = _check_name(_default_backend if backend is None else backend)
    validate_inputs(q, k, v, key_padding_mask, key_lengths)
    if name == "reference" and need_weights:
        mask = key_padding_mask if key_lengths is None else lengths_to_padding_mask(key_lengths, k.shape[2])
        return reference_attention(q, k, v, mask, causal=causal, dropout_p=dropout_p, scale=scale)
    if name == "auto":
        def run(chosen: str, q_: Tensor, k_: Tensor, v_: Tensor) -> Tensor:
            return _run_backend(chosen, q_, k_, v_, key_padding_mask, key_lengths, causal, dropout_p, scale, False)[0]

        has_mask = key_padding_mask is not None or key_lengths is not None
        name = auto_selection.choose_backend(q, k, v, has_mask=has_mask, causal=causal, dropout_p=dropout_p, run=run)
    out, lse = _run_backend(name, q, k, v, key_padding_mask, key_lengths, causal, dropout_p, scale, need_weights)
    if not need_weights:
        return out
    mask = key_padding_mask if key_lengths is None else lengths_to_padding_mask(key_lengths, k.shape[2])
    if lse is not None:
        probs = probabilities_from_lse(q, k, lse, mask, causal=causal, scale=scale)
    else:
        probs = reference_attention(q.detach(), k.detach(), v.detach(), mask, causal=causal, scale=scale)[1]
    return out, probs


from polyfuse.attention.modules import MultiHeadAttention  # noqa: E402  (module uses attention())

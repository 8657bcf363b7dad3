"""One attention entry point for the whole library.

Every attention in polyfuse (encoders, fusions, decoders) calls :func:`attention`; the backend is a
string chosen per call or globally (:func:`set_default_backend`, ``attention.backend`` in configs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from polyfuse.attention.reference import reference_attention
from polyfuse.attention.sdpa import sdpa_attention

__all__ = ["attention", "available_backends", "set_default_backend", "get_default_backend", "MultiHeadAttention"]

_BACKENDS = ("reference", "sdpa", "auto")
_default_backend = "auto"


def available_backends() -> list[str]:
    """Names accepted by ``backend=``."""
    return list(_BACKENDS)


def set_default_backend(name: str) -> None:
    """Backend used when a call passes ``backend=None`` (modules default to this)."""
    global _default_backend
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; valid: {', '.join(_BACKENDS)}")
    _default_backend = name


def get_default_backend() -> str:
    return _default_backend


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
) -> Tensor | tuple[Tensor, Tensor]:
    """Scaled dot-product attention with a key padding mask.

    Args:
        q: ``(B, H, Lq, D)``; k, v: ``(B, H, Lk, D)``.
        key_padding_mask: ``(B, Lk)`` bool, ``True`` = real key. A query row whose keys are all
            masked (an absent modality) returns zeros, never NaN.
        causal: lower-triangular mask aligned to the last key.
        backend: ``"reference"``, ``"sdpa"`` or ``"auto"``; ``None`` uses the global default.
        need_weights: also return the probabilities ``(B, H, Lq, Lk)`` (computed by the reference
            path), for visualisation.

    Returns:
        ``(B, H, Lq, D)``, or ``(out, probs)`` when ``need_weights``.
    """
    name = _default_backend if backend is None else backend
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; valid: {', '.join(_BACKENDS)}")
    if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
        raise TypeError(f"key_padding_mask must be bool (True = real key), got {key_padding_mask.dtype}")
    if need_weights or name == "reference":
        out, probs = reference_attention(q, k, v, key_padding_mask, causal=causal, dropout_p=dropout_p, scale=scale)
        return (out, probs) if need_weights else out
    return sdpa_attention(q, k, v, key_padding_mask, causal=causal, dropout_p=dropout_p, scale=scale)


from polyfuse.attention.modules import MultiHeadAttention  # noqa: E402  (module uses attention())

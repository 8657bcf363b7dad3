"""The one argument type every attention backend takes.

:func:`polyfuse.attention.attention` packs its arguments into an :class:`AttentionArgs` once; each
backend (``reference``, ``sdpa``, ``flex``, ``triton``) receives that object instead of writing
the same ``q, k, v, key_padding_mask, causal, dropout_p, scale`` signature out again.
Conventions are those of :mod:`polyfuse.attention.masks`; a packed (varlen) call carries its
``cu_seqlens_q/k`` and ``max_seqlen_q/k`` in the same object (:mod:`polyfuse.attention.varlen`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor

from polyfuse.attention.masks import allowed_mask, lengths_to_padding_mask


@dataclass(frozen=True)
class AttentionArgs:
    """One scaled dot-product attention call.

    Attributes:
        q: ``(B, H, Lq, D)``; k, v: ``(B, H, Lk, D)``. Packed: q ``(Tq, H, D)``, k, v ``(Tk, H, D)``.
        key_padding_mask: ``(B, Lk)`` bool, ``True`` = real key.
        key_lengths: ``(B,)`` number of real keys per sample (stored first), instead of a mask.
        causal: query ``i`` sees keys ``j <= i + (Lk - Lq)`` (aligned to the last key).
        dropout_p: attention-probability dropout.
        scale: softmax scale, ``None`` = ``D ** -0.5`` (see :attr:`softmax_scale`).
        cu_seqlens_q, cu_seqlens_k: packed call: ``(B + 1,)`` int offsets, sample ``b`` owns rows
            ``cu[b]:cu[b + 1]``; causal is then aligned to each sample's own last key.
        max_seqlen_q, max_seqlen_k: packed call: the longest sample (kernels size their grids with it).
    """

    q: Tensor
    k: Tensor
    v: Tensor
    key_padding_mask: Tensor | None = None
    key_lengths: Tensor | None = None
    causal: bool = False
    dropout_p: float = 0.0
    scale: float | None = None
    cu_seqlens_q: Tensor | None = None
    cu_seqlens_k: Tensor | None = None
    max_seqlen_q: int | None = None
    max_seqlen_k: int | None = None

    @property
    def packed(self) -> bool:
        """Whether this is a packed (varlen) call (``q (Tq, H, D)`` with ``cu_seqlens``)."""
        return self.cu_seqlens_q is not None

    @property
    def softmax_scale(self) -> float:
        """The scale applied to ``q k^T``."""
        return self.q.shape[-1] ** -0.5 if self.scale is None else float(self.scale)

    @property
    def has_mask(self) -> bool:
        """Whether any key may be padding (a mask or lengths was given)."""
        return self.key_padding_mask is not None or self.key_lengths is not None

    def padding_mask(self) -> Tensor | None:
        """The ``(B, Lk)`` mask, built from :attr:`key_lengths` when those were given instead."""
        if self.key_lengths is not None:
            return lengths_to_padding_mask(self.key_lengths, self.k.shape[2])
        return self.key_padding_mask

    def allowed(self) -> Tensor | None:
        """Padding and causal structure as one mask broadcastable to ``(B, H, Lq, Lk)`` (None: all allowed)."""
        return allowed_mask(self.padding_mask(), self.q.shape[-2], self.k.shape[-2], causal=self.causal,
                            device=self.q.device)

    def with_mask(self) -> AttentionArgs:
        """The same call with :attr:`key_lengths` turned into :attr:`key_padding_mask` (for backends
        that take only a mask)."""
        if self.key_lengths is None:
            return self
        return replace(self, key_padding_mask=self.padding_mask(), key_lengths=None)

    def with_qkv(self, q: Tensor, k: Tensor, v: Tensor) -> AttentionArgs:
        """The same call on other ``q, k, v`` (``auto``'s timing runs on detached copies)."""
        return replace(self, q=q, k=k, v=v)

"""Packed ("varlen") sequences: a batch's valid tokens flattened to ``(T, ...)`` with ``cu_seqlens``.

A padded batch ``x (B, L, ...)`` with a prefix mask ``(B, L)`` (``True`` = real token, stored first)
holds ``T = mask.sum()`` real tokens. :class:`Packing` records where they sit, so a model can
*unpad once* at the input (:meth:`Packing.unpad` -> ``(T, ...)``), run every per-token layer (norms,
MLPs, projections) on real tokens only, run attention on ``(T, H, D)`` with ``cu_seqlens`` (the
FlashAttention varlen convention: sample ``b`` owns rows ``cu_seqlens[b]:cu_seqlens[b + 1]``), and
pad back (:meth:`Packing.pad`) only where a consumer needs ``(B, L, ...)``.

A sample of length 0 (an absent modality) owns no rows; its padded output is zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Packing", "cu_seqlens_from_lengths", "seqlens", "validate_cu_seqlens", "sequence_ids",
           "position_ids"]


def cu_seqlens_from_lengths(lengths: Tensor) -> Tensor:
    """``(B,)`` lengths -> ``(B + 1,)`` int32 cumulative offsets starting at 0."""
    zero = torch.zeros(1, dtype=torch.int32, device=lengths.device)
    return torch.cat([zero, lengths.to(torch.int32).cumsum(0, dtype=torch.int32)])


def seqlens(cu_seqlens: Tensor) -> Tensor:
    """``(B + 1,)`` offsets -> ``(B,)`` long tokens per sample."""
    return (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.long)


def sequence_ids(cu_seqlens: Tensor) -> Tensor:
    """``(T,)`` long: which sample each packed row belongs to (``cu_seqlens (B + 1,)``)."""
    lengths = seqlens(cu_seqlens)
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths)


def position_ids(cu_seqlens: Tensor) -> Tensor:
    """``(T,)`` long: each packed row's position within its own sample (restarting at 0 per sample)."""
    sample = sequence_ids(cu_seqlens)
    return torch.arange(sample.numel(), device=cu_seqlens.device) - cu_seqlens[:-1].to(torch.long)[sample]


def validate_cu_seqlens(cu_seqlens: Tensor, total: int, name: str) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``cu_seqlens`` is ``(B + 1,)`` int32/int64, starting at 0,
    non-decreasing and ending at ``total`` (the number of packed rows). Kernels index memory with these
    offsets, so this check (one host sync) is what keeps them in bounds."""
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be (B + 1,) int32 (or int64) offsets, got {tuple(cu_seqlens.shape)} "
                         f"{cu_seqlens.dtype}")
    values = cu_seqlens.tolist()
    if values[0] != 0 or values[-1] != total:
        raise ValueError(f"{name} must start at 0 and end at the {total} packed tokens, got "
                         f"{values[0]} ... {values[-1]}")
    bad = [b for b in range(len(values) - 1) if values[b + 1] < values[b]]
    if bad:
        raise ValueError(f"{name} decreases at sample {bad[0]}: {values[bad[0]]} -> {values[bad[0] + 1]}")


@dataclass(frozen=True)
class Packing:
    """Where a padded batch's real tokens sit once packed.

    Attributes:
        cu_seqlens: ``(B + 1,)`` int32 offsets of each sample's rows in the packed tensor.
        max_seqlen: the longest sample (a Python int: kernels size their grids with it).
        indices: ``(T,)`` long positions of the real tokens in the flattened ``(B * L)`` batch.
        batch, length: ``B`` and ``L`` of the padded layout.
    """

    cu_seqlens: Tensor
    max_seqlen: int
    indices: Tensor
    batch: int
    length: int

    @classmethod
    def from_mask(cls, mask: Tensor, name: str = "tokens") -> Packing:
        """From a ``(B, L)`` bool prefix mask (``True`` = real token, real tokens first in each row).

        Raises:
            ValueError: naming ``name`` and the first sample whose mask has a hole (a real token after
                padding): packing keeps sample order, so a non-prefix mask would reorder tokens.
        """
        if mask.dim() != 2 or mask.dtype != torch.bool:
            raise ValueError(f"{name}: packing needs a (B, L) bool mask, got {tuple(mask.shape)} {mask.dtype}")
        lengths = mask.sum(1)
        prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
        holes = (prefix != mask).any(1)
        if bool(holes.any()):
            sample = int(holes.nonzero()[0, 0])
            raise ValueError(f"{name}: sample {sample}'s mask is not a prefix (a real token follows padding); "
                             "packing needs real tokens first. Use the padded path (packing off) for this input")
        return cls.from_lengths(lengths, mask.shape[1])

    @classmethod
    def from_valid(cls, mask: Tensor) -> Packing:
        """From a ``(B, L)`` bool mask of any pattern (holes allowed): each sample's valid positions in
        row order. For keys (attention over a set of keys is order-free) and for gathering rows to
        scatter back to the same positions; :meth:`mask` and :meth:`position_ids` describe the prefix
        layout only, :meth:`unpad` and :meth:`pad` work for any pattern."""
        if mask.dim() != 2 or mask.dtype != torch.bool:
            raise ValueError(f"packing needs a (B, L) bool mask, got {tuple(mask.shape)} {mask.dtype}")
        lengths = mask.sum(1)
        max_seqlen = int(lengths.max()) if lengths.numel() else 0
        return cls(cu_seqlens_from_lengths(lengths), max_seqlen, mask.reshape(-1).nonzero().squeeze(1),
                   int(mask.shape[0]), int(mask.shape[1]))

    @classmethod
    def from_lengths(cls, lengths: Tensor, length: int) -> Packing:
        """From ``(B,)`` per-sample lengths (each ``<= length``) of a ``(B, length)`` padded layout."""
        lengths = lengths.to(torch.long)
        if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > length):
            raise ValueError(f"lengths must lie in [0, {length}], got {lengths.tolist()}")
        positions = torch.arange(length, device=lengths.device)
        keep = (positions[None, :] < lengths[:, None]).reshape(-1)
        indices = keep.nonzero().squeeze(1)
        max_seqlen = int(lengths.max()) if lengths.numel() else 0
        return cls(cu_seqlens_from_lengths(lengths), max_seqlen, indices, int(lengths.numel()), length)

    @property
    def total(self) -> int:
        """``T``, the number of packed rows."""
        return int(self.indices.numel())

    def lengths(self) -> Tensor:
        """``(B,)`` long tokens per sample."""
        return seqlens(self.cu_seqlens)

    def mask(self) -> Tensor:
        """The ``(B, L)`` prefix mask this packing describes."""
        positions = torch.arange(self.length, device=self.cu_seqlens.device)
        return positions[None, :] < self.lengths()[:, None]

    def unpad(self, x: Tensor) -> Tensor:
        """``(B, L, ...)`` -> ``(T, ...)``: the real tokens in sample order."""
        if tuple(x.shape[:2]) != (self.batch, self.length):
            raise ValueError(f"unpad expects (B, L) = ({self.batch}, {self.length}) leading dims, got {tuple(x.shape)}")
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.indices)

    def pad(self, x: Tensor) -> Tensor:
        """``(T, ...)`` -> ``(B, L, ...)`` with exact zeros at padding (gradients flow to the real rows)."""
        if x.shape[0] != self.total:
            raise ValueError(f"pad expects {self.total} packed rows, got {tuple(x.shape)}")
        flat = x.new_zeros((self.batch * self.length, *x.shape[1:]))
        flat = flat.index_copy(0, self.indices, x)
        return flat.view(self.batch, self.length, *x.shape[1:])

    def sequence_ids(self) -> Tensor:
        """``(T,)`` long: which sample each packed row belongs to."""
        return sequence_ids(self.cu_seqlens)

    def position_ids(self) -> Tensor:
        """``(T,)`` long: each row's position within its own sample (restarting at 0 per sample)."""
        return position_ids(self.cu_seqlens)


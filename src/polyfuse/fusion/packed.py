"""Packed (varlen) execution for the token-level fusions: gather the valid tokens, scatter them back.

A fusion that runs packed (``packing=True``: :class:`~polyfuse.fusion.EarlyFusion`,
:class:`~polyfuse.fusion.CrossAttentionFusion`, :class:`~polyfuse.fusion.CoAttentionFusion`) gathers
each modality's *valid* tokens (``mask & present``) once, ``(B, L, D) -> (T, D)``, runs its
projections, norms, MLPs and attention on those rows only (attention through ``cu_seqlens``, see
:class:`polyfuse.attention.varlen.Packing`) and scatters the result back to the padded layout its
consumers read, with exact zeros at invalid positions.

The rows are gathered by the mask itself (row-major order, so sample ``b``'s rows are contiguous and
in position order) and scattered back to the same flat positions, so the mask need not be a prefix:
a mask with holes gives the same result as the padded path (attention is order-free over keys and
positions are already in the tokens): :meth:`Packing.from_valid` holds those positions and is also the
attention descriptor (``cu_seqlens``, ``max_seqlen``). A batch without any invalid token runs the
padded path (:func:`worth_packing`): packing would skip nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import Tensor

from polyfuse.attention.varlen import Packing
from polyfuse.batch import Encoded

__all__ = ["PackedTokens", "gather_valid", "gather_with_missing_token", "interleave", "scatter_rows", "worth_packing"]


@dataclass(frozen=True)
class PackedTokens:
    """The valid tokens of a ``(B, L, D)`` batch as ``(T, D)`` rows.

    Attributes:
        rows: ``(T, D)`` valid tokens, sample by sample, in position order.
        packing: where they sit (:meth:`Packing.from_valid`: flat positions ``indices``, ``B``, ``L``)
            and the attention descriptor (``cu_seqlens (B + 1,)``, ``max_seqlen``).
    """

    rows: Tensor
    packing: Packing

    @property
    def batch(self) -> int:
        return self.packing.batch

    @property
    def length(self) -> int:
        """``L`` of the padded layout."""
        return self.packing.length

    @property
    def index(self) -> Tensor:
        """``(T,)`` long flat positions of the rows in the ``(B * L)`` padded layout."""
        return self.packing.indices

    def columns(self) -> Tensor:
        """``(T,)`` each row's position in its padded sample."""
        return self.index % max(self.length, 1)

    def samples(self) -> Tensor:
        """``(T,)`` which sample each row belongs to."""
        return self.packing.sequence_ids()

    def lengths(self) -> Tensor:
        """``(B,)`` valid tokens per sample."""
        return self.packing.lengths()

    def scatter(self, rows: Tensor) -> Tensor:
        """``rows (T, ...)`` aligned with :attr:`rows` -> the padded ``(B, L, ...)``, zeros elsewhere."""
        return self.packing.pad(rows)


def worth_packing(inputs: Mapping[str, Encoded]) -> bool:
    """Whether some token of the prepared ``inputs`` is invalid (padding or an absent sample). Without
    one, packing would skip nothing and the fusions run their padded path (no gather/scatter cost)."""
    return not all(bool(encoded.mask.all()) for encoded in inputs.values())


def gather_valid(tokens: Tensor, mask: Tensor) -> PackedTokens:
    """``tokens (B, L, D)``, ``mask (B, L)`` bool (any pattern) -> the valid tokens as :class:`PackedTokens`."""
    batch, length = mask.shape
    if tuple(tokens.shape[:2]) != (batch, length):
        raise ValueError(f"gather_valid: tokens {tuple(tokens.shape)} do not match the mask {tuple(mask.shape)}")
    packing = Packing.from_valid(mask)
    return PackedTokens(packing.unpad(tokens), packing)


def gather_with_missing_token(tokens: Tensor, mask: Tensor, present: Tensor, project: Callable[[Tensor], Tensor],
                              token: Tensor) -> tuple[PackedTokens, Tensor]:
    """The packed form of :func:`polyfuse.fusion.masking.substitute_missing_token` after a projection.

    ``project`` maps the valid rows of ``tokens (B, L, D)``; an absent sample (``present (B,)`` False)
    gets one row, the learned ``token``, at position 0. Returns the packed rows (projected) and the
    ``(B, L)`` mask they fill (the padded path's substituted mask).
    """
    first = torch.zeros_like(mask)
    first[:, 0] = True
    absent = ~present
    mask = torch.where(absent[:, None], first, mask)
    packed = gather_valid(tokens, mask)  # an absent sample's slot holds zeros (Fusion.prepare)
    slot = absent[packed.samples()][:, None]
    rows = project(packed.rows)
    rows = torch.where(slot, token.to(rows.dtype).expand_as(rows), rows)
    return PackedTokens(rows, packed.packing), mask


def scatter_rows(rows: Tensor, index: Tensor, batch: int, length: int) -> Tensor:
    """``rows (T, D)`` at flat positions ``index (T,)`` -> ``(B, L, D)``, exact zeros elsewhere (differentiable)."""
    flat = rows.new_zeros(batch * length, *rows.shape[1:]).index_copy(0, index, rows)
    return flat.view(batch, length, *rows.shape[1:])


def interleave(parts: list[tuple[Tensor, Tensor]], batch: int) -> tuple[Tensor, Tensor, Tensor]:
    """Concatenate several packed parts per sample: ``[part_0 of b; part_1 of b; ...]`` for every ``b``.

    Args:
        parts: ``(rows (T_p, ...), lengths (B,))`` in sequence order; each part's rows are sample by sample.

    Returns:
        ``(rows (T, ...), order (T,), lengths (B,))``: the joint packed rows, where each input row went
        (``order`` indexes the concatenation of the parts' rows) and the joint per-sample lengths.
    """
    lengths = torch.stack([part_lengths.to(torch.long) for _, part_lengths in parts], dim=1)  # (B, P)
    totals = lengths.sum(1)
    sample_start = totals.cumsum(0) - totals  # (B,)
    part_offset = lengths.cumsum(1) - lengths  # (B, P)
    destinations = []
    for p, (rows, part_lengths) in enumerate(parts):
        samples = torch.repeat_interleave(torch.arange(batch, device=rows.device), part_lengths.to(torch.long))
        first = (part_lengths.to(torch.long).cumsum(0) - part_lengths.to(torch.long))[samples]
        within = torch.arange(rows.shape[0], device=rows.device) - first
        destinations.append(sample_start[samples] + part_offset[samples, p] + within)
    destination = torch.cat(destinations)
    stacked = torch.cat([rows for rows, _ in parts])
    joint = stacked.new_zeros(stacked.shape).index_copy(0, destination, stacked)
    return joint, destination, totals

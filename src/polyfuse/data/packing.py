"""Sample packing for pre-training: several short token sequences per row, up to a token budget.

Captions average ~11 tokens; padding each to the longest of its batch wastes most of a text model's
work. :class:`SamplePackingCollator` instead packs whole samples into rows of ``budget`` tokens
(first-fit decreasing, or greedy in arrival order) and records where every sample sits, so a packed
model attends *within* a sample only (block-diagonal attention through ``cu_seqlens``), numbers
positions from 0 in every sample, and computes every sample's loss exactly as if it were alone.
The layout follows Hugging Face's ``DataCollatorWithFlattening`` (concatenated samples, position
ids restarting per sample, FlashAttention ``cu_seqlens``) and open_clip's fixed token budgets
(rows of a fixed length); labels are per token and already aligned with their inputs
(``labels[t]`` is the target predicted *at* ``t``), so no shift ever crosses a sample boundary.

Consumers:

* a packed model (``(T, D)`` rows, :class:`~polyfuse.attention.varlen.Packing`): take
  :meth:`PackedRows.tokens`, :meth:`PackedRows.positions` and :meth:`PackedRows.packing`; the
  attention descriptor covers the *samples* (``cu_seqlens (N + 1,)``), never the rows.
* a padded model that reads ``(R, budget)`` rows: :meth:`PackedRows.attention_mask` is the
  block-diagonal ``(R, budget, budget)`` mask (``causal=True`` for a decoder).

Per-sample losses: :meth:`PackedRows.per_sample` sums any per-token value ``(T,)`` by sample, so
sum- and per-sample-mean reductions equal the unpacked ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence, get_args

import torch
from torch import Tensor

from polyfuse.attention.varlen import Packing, cu_seqlens_from_lengths, seqlens

__all__ = ["PackedRows", "SamplePackingCollator", "pack_lengths", "pack_masked", "pack_padded", "sample_packing_spec"]

Strategy = Literal["ffd", "greedy"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
Sample = Sequence[int] | Tensor | Mapping[str, Sequence[int] | Tensor]


def pack_lengths(lengths: Sequence[int], budget: int, strategy: Strategy = "ffd",
                 name: str = "sample") -> list[list[int]]:
    """Group sample indices into rows holding at most ``budget`` tokens each.

    ``"ffd"`` (first-fit decreasing): longest first, each into the first row with room (at most
    11/9 OPT + 1 rows). ``"greedy"``: in arrival order, a new row when the current one is full
    (keeps the data order). Within a row, samples keep their arrival order.

    Raises:
        ValueError: naming the first sample longer than ``budget`` (``"{name} {index} has ..."``;
            truncate it before, or use the collator's ``truncate=True``).
    """
    if budget <= 0:
        raise ValueError(f"pack_lengths: budget must be positive, got {budget}")
    too_long = [index for index, length in enumerate(lengths) if length > budget]
    if too_long:
        index = too_long[0]
        raise ValueError(f"{name} {index} has {lengths[index]} tokens, more than the packing budget of {budget} "
                         f"({len(too_long)} such samples); truncate them or raise the budget")
    if strategy not in STRATEGIES:
        raise ValueError(f"pack_lengths: strategy must be 'ffd' or 'greedy', got {strategy!r}")
    rows: list[list[int]] = []
    room: list[int] = []
    order = (sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)) if strategy == "ffd"
             else range(len(lengths)))
    for index in order:
        length = lengths[index]
        candidates = range(len(rows)) if strategy == "ffd" else range(max(len(rows) - 1, 0), len(rows))
        row = next((r for r in candidates if room[r] >= length), None)
        if row is None:
            rows.append([])
            room.append(budget)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= length
    return [sorted(row) for row in rows]


@dataclass
class PackedRows:
    """A batch of samples packed into ``R`` rows of ``budget`` tokens.

    Attributes:
        input_ids: ``(R, budget)`` long; ``pad_id`` where no sample sits.
        labels: ``(R, budget)`` long targets aligned with ``input_ids``; ``-100`` where ignored.
        position_ids: ``(R, budget)`` long, restarting at 0 in every sample (0 at padding).
        sequence_ids: ``(R, budget)`` long, which packed sample a token belongs to (``-1`` at padding).
        cu_seqlens: ``(N + 1,)`` int32 offsets of the ``N`` samples in :meth:`tokens` order.
        order: ``(N,)`` long, the collator-input index of each packed sample (samples are packed
            row by row, so ``order`` is not the input order under ``"ffd"``).
        truncated: how many samples were cut to the budget (``truncate=True``).
    """

    input_ids: Tensor
    labels: Tensor
    position_ids: Tensor
    sequence_ids: Tensor
    cu_seqlens: Tensor
    order: Tensor
    truncated: int = 0

    @property
    def mask(self) -> Tensor:
        """``(R, budget)`` bool, ``True`` where a sample's token sits."""
        return self.sequence_ids >= 0

    @property
    def num_samples(self) -> int:
        return int(self.order.numel())

    def lengths(self) -> Tensor:
        """``(N,)`` tokens per packed sample."""
        return seqlens(self.cu_seqlens)

    def packing(self) -> Packing:
        """The attention descriptor of :meth:`tokens`: one sequence per *sample* (block-diagonal attention).
        Its ``pad`` / ``unpad`` map ``(T, ...)`` to the per-sample ``(N, longest, ...)`` layout."""
        lengths = self.lengths()
        return Packing.from_lengths(lengths, int(lengths.max()) if lengths.numel() else 0)

    def tokens(self) -> Tensor:
        """``(T,)`` the samples' token ids, sample after sample (row-major, padding dropped)."""
        return self.input_ids[self.mask]

    def targets(self) -> Tensor:
        """``(T,)`` the labels of :meth:`tokens`."""
        return self.labels[self.mask]

    def positions(self) -> Tensor:
        """``(T,)`` each token's position within its own sample."""
        return self.position_ids[self.mask]

    def per_sample(self, values: Tensor) -> Tensor:
        """``values (T, ...)`` (e.g. per-token losses) summed per sample -> ``(N, ...)``."""
        index = self.sequence_ids[self.mask]
        return values.new_zeros(self.num_samples, *values.shape[1:]).index_add(0, index, values)

    def unpack(self, values: Tensor, length: int) -> Tensor:
        """Per-slot ``values (R, budget, ...)`` back to the samples' padded layout ``(N, length, ...)``.

        Row ``i`` is collator-input sample ``i`` (the order before packing), its tokens at their
        positions; zeros where no token sits (gradients flow to the real slots only)."""
        if tuple(values.shape[:2]) != tuple(self.sequence_ids.shape):
            raise ValueError(f"unpack expects (R, budget) = {tuple(self.sequence_ids.shape)} leading dims, got "
                             f"{tuple(values.shape)}")
        real = self.mask
        sample = self.order[self.sequence_ids[real]]
        out = values.new_zeros((self.num_samples, length, *values.shape[2:]))
        return out.index_put((sample, self.position_ids[real]), values[real])

    def attention_mask(self, causal: bool = False) -> Tensor:
        """``(R, budget, budget)`` bool: query ``i`` may attend key ``j`` (same sample; ``j <= i`` if causal).
        Rows of padding attend nothing."""
        ids = self.sequence_ids
        allowed = (ids[:, :, None] == ids[:, None, :]) & (ids[:, :, None] >= 0)
        if causal:
            budget = ids.shape[1]
            allowed = allowed & torch.ones(budget, budget, dtype=torch.bool, device=ids.device).tril()
        return allowed

    def segments(self) -> tuple[Packing, Tensor]:
        """The fixed-width layout: all ``R * budget`` slots (``input_ids.flatten()``), cut into segments.

        One segment per (non-empty) sample and one per row's padding tail, in slot order, so a packed
        model run on the whole rows (a fixed shape) attends within a sample only and never across
        rows; padding segments see only themselves. Returns ``(packing, sample)``: the
        :class:`Packing` over the ``S`` segments, and ``sample (S,)`` long, the packed-sample index of
        each segment (``-1`` for padding).
        """
        flat = self.sequence_ids.reshape(-1)
        starts = torch.ones_like(flat, dtype=torch.bool)
        starts[1:] = flat[1:] != flat[:-1]
        starts.view(self.sequence_ids.shape)[:, 0] = True  # a segment never crosses a row
        first = starts.nonzero().squeeze(1)
        lengths = torch.diff(first, append=first.new_full((1,), flat.numel()))
        return Packing.from_lengths(lengths, int(lengths.max()) if lengths.numel() else 0), flat[first]


class SamplePackingCollator:
    """Collate token sequences into :class:`PackedRows` of ``budget`` tokens (see the module docstring).

    Each sample is a sequence of token ids, or a mapping with ``input_ids`` and optionally ``labels``
    (same length; e.g. MLM targets). Without labels, ``next_token=True`` makes causal-LM targets
    (``labels[t] = input_ids[t + 1]`` within the sample, ``-100`` at its last token), else all
    ``-100``.

    Args:
        budget: tokens per row. strategy: ``"ffd"`` or ``"greedy"`` (:func:`pack_lengths`).
        pad_id: the id of row padding. next_token: build next-token labels (above).
        truncate: cut samples longer than ``budget`` to it (counted in ``PackedRows.truncated``);
            otherwise such a sample is an error naming its index.
        rows: pad the batch to this many rows (a fixed shape, e.g. for compiled models); an error
            when the samples need more.
    """

    def __init__(self, budget: int, strategy: Strategy = "ffd", pad_id: int = 0, next_token: bool = False,
                 truncate: bool = False, rows: int | None = None) -> None:
        if budget <= 0:
            raise ValueError(f"SamplePackingCollator: budget must be positive, got {budget}")
        self.budget, self.strategy, self.pad_id = budget, strategy, pad_id
        self.next_token, self.truncate, self.rows = next_token, truncate, rows

    def _sample(self, index: int, sample: Sample) -> tuple[Tensor, Tensor]:
        if isinstance(sample, Mapping):
            if "input_ids" not in sample:
                raise KeyError(f"sample {index} has no 'input_ids' (keys: {sorted(sample)})")
            ids = torch.as_tensor(sample["input_ids"], dtype=torch.long)
            labels = sample.get("labels")
        else:
            ids, labels = torch.as_tensor(sample, dtype=torch.long), None
        if ids.dim() != 1:
            raise ValueError(f"sample {index}: input_ids must be one sequence, got shape {tuple(ids.shape)}")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long)
            if labels.shape != ids.shape:
                raise ValueError(f"sample {index}: labels {tuple(labels.shape)} do not match input_ids "
                                 f"{tuple(ids.shape)}")
        elif self.next_token:
            labels = torch.cat([ids[1:], ids.new_full((min(1, ids.numel()),), -100)])
        else:
            labels = torch.full_like(ids, -100)
        return ids, labels

    def __call__(self, samples: Sequence[Sample]) -> PackedRows:
        pairs = [self._sample(index, sample) for index, sample in enumerate(samples)]
        truncated = 0
        if self.truncate:
            truncated = sum(ids.numel() > self.budget for ids, _ in pairs)
            pairs = [(ids[:self.budget], labels[:self.budget]) for ids, labels in pairs]
        lengths = [ids.numel() for ids, _ in pairs]
        width = max(lengths, default=0)
        ids = torch.full((len(pairs), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(pairs), width), -100, dtype=torch.long)
        for index, (sample_ids, sample_labels) in enumerate(pairs):
            ids[index, :lengths[index]], labels[index, :lengths[index]] = sample_ids, sample_labels
        packed = pack_padded(ids, lengths, self.budget, self.strategy, self.pad_id, labels=labels, rows=self.rows)
        packed.truncated = truncated
        return packed


def pack_padded(ids: Tensor, lengths: Sequence[int], budget: int, strategy: Strategy = "ffd", pad_id: int = 0,
                labels: Tensor | None = None, rows: int | None = None, name: str = "sample") -> PackedRows:
    """Pack the prefixes ``ids[i, :lengths[i]]`` of a padded batch ``ids (N, L)`` into :class:`PackedRows`.

    The layout comes from :func:`pack_lengths` (host side, on the Python ``lengths``); the rows are
    built with one scatter per field on ``ids``' device, so a model can pack a batch that is already
    on its accelerator. ``labels (N, L)`` are packed alongside (``-100`` without them); ``rows`` pads
    the batch to a fixed number of rows (an error when the samples need more). ``name`` prefixes the
    error for a sample longer than ``budget`` (e.g. ``"caption_ids: sample"``).
    """
    lengths = [int(length) for length in lengths]
    if ids.dim() != 2 or len(lengths) != ids.shape[0] or any(n > ids.shape[1] for n in lengths):
        raise ValueError(f"pack_padded: ids must be (N, L) with N = {len(lengths)} lengths each <= L, got "
                         f"{tuple(ids.shape)} and lengths {lengths}")
    bins = pack_lengths(lengths, budget, strategy, name=name)
    count = len(bins) if rows is None else rows
    if count < len(bins):
        raise ValueError(f"{len(lengths)} samples need {len(bins)} rows of {budget} tokens, more than rows={rows}")
    order = [index for members in bins for index in members]
    slot, rank = [0] * len(lengths), [0] * len(lengths)  # per input sample: first flat slot, packed index
    for row, members in enumerate(bins):
        start = row * budget
        for index in members:
            slot[index] = start
            start += lengths[index]
    for packed, index in enumerate(order):
        rank[index] = packed
    device = ids.device
    length_of = torch.tensor(lengths, dtype=torch.long, device=device).reshape(-1)
    positions = torch.arange(ids.shape[1], device=device).expand_as(ids)
    real = positions < length_of[:, None]
    where = (torch.tensor(slot, dtype=torch.long, device=device).reshape(-1, 1) + positions)[real]

    def scatter(values: Tensor, fill: int) -> Tensor:
        return torch.full((count * budget,), fill, dtype=torch.long, device=device).index_copy(
            0, where, values[real].to(torch.long)).view(count, budget)

    packed_index = torch.tensor(rank, dtype=torch.long, device=device).reshape(-1, 1).expand_as(ids)
    order_tensor = torch.tensor(order, dtype=torch.long, device=device)
    return PackedRows(input_ids=scatter(ids, pad_id),
                      labels=scatter(torch.full_like(ids, -100) if labels is None else labels, -100),
                      position_ids=scatter(positions, 0), sequence_ids=scatter(packed_index, -1),
                      cu_seqlens=cu_seqlens_from_lengths(length_of[order_tensor]), order=order_tensor)


def sample_packing_spec(options: Mapping[str, Any] | None, owner: str) -> dict[str, Any] | None:
    """Check a module's ``sample_packing`` option: ``None`` (off) or ``{budget, strategy, rows}``.

    Returns the complete spec (``strategy`` defaults to ``"ffd"``, ``rows`` to ``None``), the keyword
    arguments of :func:`pack_masked`. Raises a ``ValueError`` naming ``owner`` for anything else.
    """
    if options is None:
        return None
    unknown = sorted(set(options) - {"budget", "strategy", "rows"})
    budget, strategy, rows = options.get("budget"), options.get("strategy", "ffd"), options.get("rows")
    if (unknown or not isinstance(budget, int) or budget <= 0 or strategy not in STRATEGIES
            or not (rows is None or isinstance(rows, int) and rows > 0)):
        raise ValueError(f"{owner} sample_packing must be {{budget: positive int, strategy: "
                         f"{' | '.join(STRATEGIES)}, rows: positive int or null}}, got {dict(options)}")
    return {"budget": budget, "strategy": strategy, "rows": rows}


def pack_masked(ids: Tensor, mask: Tensor, budget: int, strategy: Strategy = "ffd", rows: int | None = None,
                pad_id: int = 0, name: str = "tokens") -> PackedRows:
    """Pack a right-padded batch ``ids (N, L)`` with its prefix mask ``(N, L)`` into :class:`PackedRows`.

    What a model does to sample-pack a batch it already holds (the caption head's decoder inputs, a
    text tower's tokens): the lengths come from the mask, checked to be a prefix, then
    :func:`pack_padded`. Errors name ``name`` and the sample: a mask with holes, or a sample longer
    than ``budget`` (never truncated here).
    """
    lengths = Packing.from_mask(mask, name=name).lengths().tolist()
    return pack_padded(ids, lengths, budget, strategy, pad_id, rows=rows, name=f"{name}: sample")

"""Leaving placeholder rows (``Batch.valid == False``) out of losses and metrics.

A sample that could not be read stays in its batch as a placeholder row so that every DDP rank
has the same batch size (see :class:`~polyfuse.batch.Batch` ``valid``). These helpers are the one
place where such rows are left out, by the masking rule of :mod:`polyfuse.masking`:

* :func:`mask_rows` -- a loss's inputs with the invalid rows replaced by zeros
  (:func:`polyfuse.masking.zero_invalid`), so the gradient reaching the original rows is exactly zero even when they
  hold NaN (a loss's own backward multiplies by its inputs: ``nan * 0`` would be ``nan``);
* :func:`masked_mean` -- the mean of a per-row loss over the valid rows only. Invalid rows are
  replaced with :func:`torch.where` (never multiplied by zero, so a NaN or inf computed from a
  placeholder cannot reach the result or the gradient), and a batch without a valid row gives
  ``0`` that still depends on every input, so DDP's gradient all-reduce runs on that rank too.
* :func:`zero_with_graph` -- that zero on its own.
* :func:`select_rows` -- keep only the valid rows of tensors, lists and dicts of them (and of a
  :class:`~polyfuse.batch.Batch`), for metric updates.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, TypeVar

import torch
from torch import Tensor

from polyfuse.batch import Batch, ModalityInput
from polyfuse.masking import broadcast_mask, zero_invalid

__all__ = ["mask_rows", "masked_mean", "zero_with_graph", "select_rows", "valid_or_none"]

T = TypeVar("T")


def valid_or_none(valid: Tensor | None) -> Tensor | None:
    """``None`` when every row is valid (the fast path of every loss), else ``valid``."""
    if valid is None or bool(valid.all()):
        return None
    return valid


mask_rows = zero_invalid
"""``values: (B, ...)`` with the rows where ``valid: (B,)`` is ``False`` set to zero (the rule of
:mod:`polyfuse.masking`: no gradient and no NaN reach those rows); ``valid=None`` returns ``values``."""


def zero_with_graph(*inputs: Tensor | float | None) -> Tensor:
    """A scalar ``0`` whose graph reaches every tensor in ``inputs`` with zero gradient.

    Built with ``torch.where`` on an all-``False`` condition, so non-finite inputs give ``0`` and a
    zero gradient (``nan * 0`` would give ``nan``).
    """
    tensors = [value for value in inputs if isinstance(value, Tensor) and value.is_floating_point()]
    if not tensors:
        raise ValueError("zero_with_graph needs at least one floating-point tensor")
    total = None
    for value in tensors:
        kept = zero_invalid(value, torch.zeros_like(value, dtype=torch.bool)).sum()
        total = kept if total is None else total + kept.to(total.dtype)
    return total  # type: ignore[return-value]


def masked_mean(values: Tensor, valid: Tensor | None, weight: Tensor | None = None) -> Tensor:
    """Mean of ``values`` over the valid rows (a weighted mean with ``weight``).

    Args:
        values: ``(B, ...)`` per-row (or per-row-and-position) loss terms.
        valid: ``(B,)`` bool or ``None`` (every row valid).
        weight: optional ``(B, ...)`` non-negative weights broadcastable to ``values`` (e.g. the
            non-padding tokens of a sequence loss); the result is ``Σ w v / Σ w`` over valid rows.

    Returns a scalar; ``0`` with a graph (:func:`zero_with_graph`) when no row (or weight) counts.
    """
    keep = torch.ones_like(values, dtype=torch.bool)
    if valid is not None:
        if valid.shape != values.shape[:1]:
            raise ValueError(f"masked_mean: valid {tuple(valid.shape)} does not match values {tuple(values.shape)}")
        keep = keep & broadcast_mask(valid, values)
    if weight is not None:
        weight = weight.to(values.dtype).expand_as(values)
        keep = keep & (weight != 0)
        weight = zero_invalid(weight, keep)
    total_weight = keep.sum() if weight is None else weight.sum()
    if not bool(keep.any()):
        return zero_with_graph(values)
    weighted = values if weight is None else values * weight
    return zero_invalid(weighted, keep).sum() / total_weight.to(values.dtype)


def select_rows(value: T, valid: Tensor | None, batch_size: int | None = None) -> T:
    """``value`` with only its valid rows: tensors whose first dimension is the batch size are
    indexed, lists/tuples of that length filtered, dicts and a :class:`Batch` /
    :class:`ModalityInput` handled field by field; anything else is returned as it is.

    ``batch_size`` defaults to ``len(valid)``. ``valid=None`` returns ``value`` unchanged.
    """
    if valid is None:
        return value
    size = int(valid.shape[0]) if batch_size is None else batch_size
    rows = valid.nonzero().flatten().tolist()

    def pick(item: Any) -> Any:
        if isinstance(item, Tensor):
            return item[valid.to(item.device)] if item.dim() and item.shape[0] == size else item
        if isinstance(item, Batch):
            return Batch(pick(item.inputs), pick(item.targets), pick(list(item.ids)), pick(item.extras), None)
        if isinstance(item, ModalityInput):
            return replace(item, **{f.name: pick(getattr(item, f.name)) for f in fields(item)})
        if isinstance(item, dict):
            return {key: pick(entry) for key, entry in item.items()}
        if isinstance(item, (list, tuple)) and len(item) == size:
            return type(item)(item[row] for row in rows) if isinstance(item, tuple) else [item[row] for row in rows]
        return item

    return pick(value)

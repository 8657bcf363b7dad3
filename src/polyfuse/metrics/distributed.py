"""Gathering per-sample evaluation results from every process, once per sample, in sample-id order.

Evaluation loaders shard a split over the ranks without padding (``EpochSampler(pad=False)``), so the
union of the ranks' samples is the split. Split-level metrics (retrieval, ITM ranking, caption
scores) need all of it on every rank: :func:`gather_by_id` collects ``{sample id: value}`` from every
rank with ``all_gather_object`` and merges it -- a sample a padded sampler handed to two ranks is kept
once -- sorted by id, so every rank (and a single-process run) sees the same order.
"""

from __future__ import annotations

from typing import Mapping, TypeVar

from polyfuse.distributed import gather_from_ranks

__all__ = ["gather_by_id"]

T = TypeVar("T")


def gather_by_id(local: Mapping[str, T]) -> dict[str, T]:
    """``{sample id: value}`` of every rank, each id once, sorted by id (numerically when every id is an
    integer). Values should be CPU tensors or plain Python objects (they are pickled)."""
    merged: dict[str, T] = {}
    for part in gather_from_ranks(dict(local)):
        for key, value in part.items():
            merged.setdefault(str(key), value)
    keys = list(merged)
    numeric = all(key.lstrip("-").isdigit() for key in keys)
    keys.sort(key=(lambda key: (int(key), key)) if numeric else None)  # type: ignore[arg-type]
    return {key: merged[key] for key in keys}

"""A DataLoader that counts bad samples in the main process (bad samples are placeholder rows)."""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader

from polyfuse.batch import Batch
from polyfuse.data.errors import BadSampleTracker


class BadSampleLoader(DataLoader):
    """``torch.utils.data.DataLoader`` + bad-sample accounting (see :mod:`polyfuse.data.errors`).

    Each batch's ``extras["bad_samples"]`` (filled by
    :class:`~polyfuse.data.collate.MultimodalCollate` in the workers) is removed and recorded in
    ``tracker`` (:meth:`~polyfuse.data.errors.BadSampleTracker.observe`); bad samples stay in the
    batch as placeholder rows (``batch.valid``), so every DDP rank runs the same steps. When the
    epoch's last batch is observed (a sized loader: Lightning never asks past its length) or the
    iteration ends, the tracker sums the counts over the ranks, logs its summary and checks
    ``max_bad_fraction``. Before each epoch the dataset's
    ``set_epoch`` (streaming shards reshuffle with it) is called, in step on every rank.

    Args:
        tracker: counts for this loader's split (required keyword; the rest is DataLoader's).
    """

    def __init__(self, *args: Any, tracker: BadSampleTracker, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracker = tracker
        self._epoch = torch.zeros((), dtype=torch.long)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(int(self._epoch))
        self._epoch += 1
        return self._tracked(super().__iter__())

    def _tracked(self, batches: Iterator[Any]) -> Iterator[Any]:
        complete, ended, seen = False, False, 0
        try:
            expected: int | None = len(self)
        except TypeError:  # an iterable dataset without a length: the epoch ends at StopIteration
            expected = None
        try:
            for batch in batches:
                if isinstance(batch, Batch):
                    self.tracker.observe(batch)  # pops extras["bad_samples"]; placeholder rows stay
                seen += 1
                if seen == expected:  # Lightning never asks a sized loader for more than its length
                    ended = True
                    self.tracker.end_epoch(complete=True)  # all ranks at their last batch: global counts
                yield batch
            complete = True
        finally:  # an epoch cut short (sanity check, limit_*_batches) is summarised, not checked
            if not ended:
                self.tracker.end_epoch(complete=complete)

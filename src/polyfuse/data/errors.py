"""Bad input: skipped and counted by default, an error naming the file in strict mode.

A reader or decoder that meets a corrupt image/audio file, a missing file, a malformed JSON line
or an empty caption does not crash the run. The flow, which works the same with 0 or N
DataLoader workers and under DDP:

1. in the worker, the failing sample becomes a :class:`BadSample` marker (or, in strict mode,
   a :class:`~polyfuse.data.io.DataFileError` naming the file is raised);
2. :class:`~polyfuse.data.collate.MultimodalCollate` turns each marker into a placeholder row
   (``batch.valid`` is ``False`` there; the batch keeps its size, so every DDP rank runs the same
   steps with equal shapes) and hands the markers on in ``batch.extras["bad_samples"]``;
3. in the main process the loader calls :meth:`BadSampleTracker.observe` on every batch, which
   pops the markers, counts valid rows as good and markers as bad, logs each file, and
   :meth:`BadSampleTracker.end_epoch` at the end of every epoch's iteration, which sums the
   counts of every rank (one all-reduce, when a process group of more than one rank is
   initialised), logs the summary and stops the run with :class:`TooManyBadSamplesError` when
   more than ``max_bad_fraction`` of the split's samples are bad -- on every rank or on none.

Mid-epoch, a single process checks the fraction once ``min_samples`` were seen. Under DDP that
check only warns: ranks may run different numbers of batches (evaluation splits are not padded),
so a per-batch collective could deadlock and a rank raising alone would leave the others waiting;
the global check at the end of the epoch is the one that stops the run.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import torch
import torch.distributed as dist

from polyfuse.data.io import DataFileError

if TYPE_CHECKING:
    from polyfuse.batch import Batch

log = logging.getLogger(__name__)

BAD_SAMPLES_KEY = "bad_samples"  # batch.extras key the collate function fills


@dataclass(frozen=True)
class BadSample:
    """A sample that could not be read, in place of the sample.

    Attributes:
        id: the sample's id (or index) when known.
        source: the file (or ``file, line N`` / ``shard.tar:member``) at fault.
        reason: what was wrong, e.g. ``"cannot decode image file ..."`` or ``"empty caption"``.
    """

    id: str
    source: str
    reason: str

    def error(self) -> DataFileError:
        """The strict-mode error for this sample (its message names the file)."""
        return DataFileError(f"{self.source}: {self.reason} (sample {self.id})")


@dataclass(frozen=True)
class BadSamplePolicy:
    """What to do with bad input (``data.bad_samples`` in configs).

    Attributes:
        strict: raise :class:`~polyfuse.data.io.DataFileError` naming the file at the first bad sample
            instead of skipping it.
        max_bad_fraction: stop with :class:`TooManyBadSamplesError` when more than this fraction of
            the samples seen in a split is bad, counted over every DDP rank at the end of every
            epoch (and, in a single process, after ``min_samples`` samples mid-epoch).
        min_samples: samples seen before the fraction is checked mid-epoch (a few bad files at
            the start of an epoch should not stop a run); under DDP the mid-epoch check warns.
        log_first: bad files logged one by one per split and epoch; the rest only in the summary.
    """

    strict: bool = False
    max_bad_fraction: float = 0.05
    min_samples: int = 200
    log_first: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"data.bad_samples.max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")


class TooManyBadSamplesError(DataFileError):
    """More than ``max_bad_fraction`` of a split's samples were bad."""


class BadSampleTracker:
    """Counts good and bad samples of one split in the main process (see module docstring).

    Records found while indexing (malformed JSON lines, annotations naming unknown images) are
    added with :meth:`add_index_errors` and count towards every epoch's fraction; every rank
    indexes the same annotation files, so they are not summed across ranks.

    ``history`` holds one entry per epoch, ``{"epoch", "good", "bad", "index_errors"}``, with the
    counts of all ranks when the epoch ran to its end under DDP (this rank's for an epoch cut
    short); the summary logged at the end of the epoch reports the same numbers.
    """

    def __init__(self, split: str, policy: BadSamplePolicy | None = None) -> None:
        self.split = split
        self.policy = policy or BadSamplePolicy()
        self.index_errors: list[BadSample] = []
        self.epoch = 0
        self.history: list[dict[str, int]] = []
        self._reset()

    def _reset(self) -> None:
        self.good = 0
        self.bad: list[BadSample] = []
        self._warned = False

    def add_index_errors(self, bad: Iterable[BadSample], total: int) -> None:
        """Records dropped while indexing ``total`` records; strict mode raises on the first."""
        bad = list(bad)
        if bad and self.policy.strict:
            raise bad[0].error()
        for sample in bad:
            log.warning("%s: skipping record while indexing: %s: %s", self.split, sample.source, sample.reason)
        self.index_errors.extend(bad)
        self._check(len(self.index_errors), total, final=True)

    def observe(self, batch: "Batch") -> None:
        """Count one collated batch: pop its ``extras["bad_samples"]`` markers (bad) and count its
        valid rows (good). Strict mode raises the first marker's :class:`DataFileError`."""
        bad = batch.extras.pop(BAD_SAMPLES_KEY, [])
        self.record(good=batch.num_valid, bad=bad)

    def record(self, good: int, bad: Iterable[BadSample]) -> None:
        """Count one batch: ``good`` samples delivered and the ``bad`` ones replaced by placeholders."""
        bad = list(bad)
        if bad and self.policy.strict:
            raise bad[0].error()
        for sample in bad:
            if len(self.bad) < self.policy.log_first:
                log.warning("%s: skipped bad sample %s: %s: %s", self.split, sample.id, sample.source, sample.reason)
        self.good += good
        self.bad.extend(bad)
        if self.good + len(self.bad) < self.policy.min_samples:
            return
        if _world_size() == 1:
            self._check(len(self.bad) + len(self.index_errors), self.seen, final=False)
        elif not self._warned and self._over_limit(len(self.bad) + len(self.index_errors), self.seen):
            self._warned = True  # no collective per batch: the global check at the epoch's end decides
            log.warning("%s: %d of this rank's %d samples are bad so far, more than max_bad_fraction=%s; "
                        "the run stops at the end of the epoch if all ranks together are over the limit",
                        self.split, len(self.bad) + len(self.index_errors), self.seen, self.policy.max_bad_fraction)

    def end_epoch(self, complete: bool = True) -> dict[str, int]:
        """Sum the counts over every DDP rank, log the epoch's summary, check the fraction, reset
        the counts; returns the (global) counts.

        Only an epoch that ran to its end (``complete``) is summed and checked: every rank reaches
        that point, whereas an iteration cut short (sanity check, ``limit_*_batches``, an error on
        one rank) must not enter a collective the other ranks may never join; its counts are this
        rank's own.
        """
        good, bad = self.good, len(self.bad)
        if complete and _world_size() > 1:
            good, bad = _all_reduce_sum([good, bad])
        index_errors = len(self.index_errors)
        counts = {"epoch": self.epoch, "good": good, "bad": bad, "index_errors": index_errors}
        self.history.append(counts)
        seen = good + bad + index_errors
        if bad or index_errors:
            log.warning("%s", self.summary(seen, bad + index_errors))
        try:
            if complete:
                self._check(bad + index_errors, seen, final=True)
        finally:
            self.epoch += 1
            self._reset()
        return counts

    @property
    def seen(self) -> int:
        """Samples seen this epoch, bad ones and records dropped while indexing included."""
        return self.good + len(self.bad) + len(self.index_errors)

    def summary(self, seen: int | None = None, skipped: int | None = None) -> str:
        """One paragraph: how many samples were skipped (``skipped``/``seen``: the global counts,
        default this rank's), why, and the first files (those this rank saw)."""
        every = self.index_errors + self.bad
        seen = self.seen if seen is None else seen
        skipped = len(every) if skipped is None else skipped
        reasons = Counter(_reason_kind(sample.reason) for sample in every)
        kinds = ", ".join(f"{count} {kind}" for kind, count in reasons.most_common())
        files = ", ".join(sample.source for sample in every[:5])
        more = f" and {skipped - 5} more" if skipped > 5 else ""
        here = "" if skipped == len(every) else f" (this rank: {len(every)}: {kinds})"
        kinds_part = "" if here else f" ({kinds})"
        return (f"{self.split} epoch {self.epoch}: skipped {skipped} of {seen} samples{kinds_part}{here}; "
                f"files: {files}{more}")

    def _over_limit(self, bad: int, seen: int) -> bool:
        return seen > 0 and bad / seen > self.policy.max_bad_fraction

    def _check(self, bad: int, seen: int, final: bool) -> None:
        if not self._over_limit(bad, seen):
            return
        raise TooManyBadSamplesError(
            f"{self.split}: {bad} of {seen} samples ({bad / seen:.1%}) are bad, more than "
            f"data.bad_samples.max_bad_fraction={self.policy.max_bad_fraction}"
            f"{'' if final else ' (checked mid-epoch)'}. {self.summary(seen, bad)}. Fix or remove these files, "
            "or raise the limit if the loss is acceptable.")


def _world_size() -> int:
    """Ranks of the default process group (1 when none is initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce_sum(values: list[int]) -> list[int]:
    """``values`` summed over every rank of the default process group (gloo: CPU, nccl: this
    rank's CUDA device)."""
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    total = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return [int(value) for value in total.tolist()]


def _reason_kind(reason: str) -> str:
    """A short category for summaries (``"cannot decode image file x.jpg: ..."`` -> ``cannot decode image``)."""
    head = reason.split(":", 1)[0]
    words = head.split()
    for marker in ("file", "line"):
        if marker in words:
            words = words[: words.index(marker)]
    return " ".join(words[:4]) or "bad"

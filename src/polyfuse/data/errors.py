"""Bad input: skipped and counted by default, an error naming the file in strict mode.

A reader or decoder that meets a corrupt image/audio file, a missing file, a malformed JSON line
or an empty caption does not crash the run. The flow, which works the same with 0 or N
DataLoader workers:

1. in the worker, the failing sample becomes a :class:`BadSample` marker (or, in strict mode,
   a :class:`~polyfuse.data.io.DataFileError` naming the file is raised);
2. :class:`~polyfuse.data.collate.MultimodalCollate` drops markers from the batch and hands them
   on in ``batch.extras["bad_samples"]``;
3. in the main process :class:`~polyfuse.data.loader.BadSampleLoader` pops them into a
   :class:`BadSampleTracker`, which logs each file, stops the run with
   :class:`TooManyBadSamplesError` when more than ``max_bad_fraction`` of the data is bad, and
   logs a summary at the end of every epoch.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

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
            the samples seen in a split is bad (checked after ``min_samples`` samples and at the
            end of every epoch).
        min_samples: samples seen before the fraction is checked mid-epoch (a few bad files at
            the start of an epoch should not stop a run).
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
    added with :meth:`add_index_errors` and count towards every epoch's fraction.
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
        """Count one collated batch: pops its ``extras["bad_samples"]`` markers."""
        self.record(good=batch.batch_size, bad=batch.extras.pop(BAD_SAMPLES_KEY, []))

    def record(self, good: int, bad: Iterable[BadSample]) -> None:
        """Count one batch: ``good`` samples delivered and the ``bad`` ones dropped."""
        bad = list(bad)
        if bad and self.policy.strict:
            raise bad[0].error()
        for sample in bad:
            if len(self.bad) < self.policy.log_first:
                log.warning("%s: skipped bad sample %s: %s: %s", self.split, sample.id, sample.source, sample.reason)
        self.good += good
        self.bad.extend(bad)
        if self.good + len(self.bad) >= self.policy.min_samples:
            self._check(len(self.bad) + len(self.index_errors), self.seen, final=False)

    def end_epoch(self, complete: bool = True) -> dict[str, int]:
        """Log the epoch's summary, check the fraction (only when the epoch ran to its end),
        reset the counts; returns the counts."""
        counts = {"epoch": self.epoch, "good": self.good, "bad": len(self.bad), "index_errors": len(self.index_errors)}
        self.history.append(counts)
        if self.bad:
            log.warning("%s", self.summary())
        try:
            if complete:
                self._check(len(self.bad) + len(self.index_errors), self.seen, final=True)
        finally:
            self.epoch += 1
            self._reset()
        return counts

    @property
    def seen(self) -> int:
        """Samples seen this epoch, bad ones and records dropped while indexing included."""
        return self.good + len(self.bad) + len(self.index_errors)

    def summary(self, seen: int | None = None) -> str:
        """One paragraph: how many samples were skipped, why, and the first files."""
        every = self.index_errors + self.bad
        seen = self.seen if seen is None else seen
        reasons = Counter(_reason_kind(sample.reason) for sample in every)
        kinds = ", ".join(f"{count} {kind}" for kind, count in reasons.most_common())
        files = ", ".join(sample.source for sample in every[:5])
        more = f" and {len(every) - 5} more" if len(every) > 5 else ""
        return (f"{self.split} epoch {self.epoch}: skipped {len(every)} of {seen} samples"
                f" ({kinds}); files: {files}{more}")

    def _check(self, bad: int, seen: int, final: bool) -> None:
        if seen == 0 or bad / seen <= self.policy.max_bad_fraction:
            return
        raise TooManyBadSamplesError(
            f"{self.split}: {bad} of {seen} samples ({bad / seen:.1%}) are bad, more than "
            f"data.bad_samples.max_bad_fraction={self.policy.max_bad_fraction}"
            f"{'' if final else ' (checked mid-epoch)'}. {self.summary(seen)}. Fix or remove these files, "
            "or raise the limit if the loss is acceptable.")


def _reason_kind(reason: str) -> str:
    """A short category for summaries (``"cannot decode image file x.jpg: ..."`` -> ``cannot decode image``)."""
    head = reason.split(":", 1)[0]
    words = head.split()
    for marker in ("file", "line"):
        if marker in words:
            words = words[: words.index(marker)]
    return " ".join(words[:4]) or "bad"

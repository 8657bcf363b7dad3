"""The bad-sample policy and tracker: counting, strict errors, the bad fraction, summaries."""

from __future__ import annotations

import pytest

from polyfuse.data import BadSample, BadSamplePolicy, BadSampleTracker, DataFileError, TooManyBadSamplesError


def _bad(name: str, reason: str = "cannot decode image file x: broken") -> BadSample:
    return BadSample(name, f"/data/{name}.jpg", reason)


def test_counts_reset_per_epoch_and_summary_names_files_and_reasons():
    tracker = BadSampleTracker("val", BadSamplePolicy(max_bad_fraction=0.5))
    tracker.record(good=6, bad=[_bad("a"), _bad("b", "empty caption/text ''")])
    assert "val epoch 0: skipped 2 of 8 samples (1 cannot decode image, 1 empty caption/text ''); " \
           "files: /data/a.jpg, /data/b.jpg" == tracker.summary()
    assert tracker.end_epoch() == {"epoch": 0, "good": 6, "bad": 2, "index_errors": 0}
    tracker.record(good=3, bad=[])
    assert tracker.end_epoch()["bad"] == 0 and tracker.epoch == 2


def test_index_errors_count_towards_the_fraction_every_epoch():
    tracker = BadSampleTracker("train", BadSamplePolicy(max_bad_fraction=0.2))
    tracker.add_index_errors([BadSample("7", "/data/metadata.jsonl, line 7", "malformed JSON line")], total=10)
    tracker.record(good=6, bad=[_bad("a")])
    with pytest.raises(TooManyBadSamplesError, match=r"2 of 8 samples.*metadata.jsonl, line 7, /data/a.jpg"):
        tracker.end_epoch()


def test_strict_mode_raises_on_the_first_bad_record_naming_the_file():
    tracker = BadSampleTracker("train", BadSamplePolicy(strict=True))
    with pytest.raises(DataFileError, match=r"/data/metadata.jsonl, line 3: malformed JSON line \(sample 3\)"):
        tracker.add_index_errors([BadSample("3", "/data/metadata.jsonl, line 3", "malformed JSON line")], total=5)
    with pytest.raises(DataFileError, match="/data/a.jpg"):
        tracker.record(good=1, bad=[_bad("a")])


def test_policy_validates_the_fraction():
    with pytest.raises(ValueError, match="max_bad_fraction must be in"):
        BadSamplePolicy(max_bad_fraction=1.5)

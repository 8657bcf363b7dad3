"""Bad samples found in DataLoader workers are dropped, counted in the main process, summarised per epoch."""

from __future__ import annotations

import logging
import traceback

import pytest

from polyfuse.data import (BadSamplePolicy, BadSampleTracker, CsvCaptionsReader, DataFileError,
                           DecodedDataset, MultimodalCollate, MultimodalLoader, SampleDecoder,
                           TooManyBadSamplesError)

from .media import corrupt, write_image


def _dataset(tmp_path, pipelines, bad: set[int], size: int = 12, strict: bool = False) -> DecodedDataset:
    rows = ["filepath\ttitle"]
    for index in range(size):
        path = tmp_path / f"{index}.jpg"
        corrupt(path) if index in bad else write_image(path, seed=index)
        rows.append(f"{path.name}\ta dog {index}")
    (tmp_path / "data.tsv").write_text("\n".join(rows) + "\n")
    decoder = SampleDecoder(("image", "text"), **pipelines)
    return DecodedDataset(CsvCaptionsReader(tmp_path / "data.tsv"), decoder, strict=strict)


def _loader(dataset, policy: BadSamplePolicy, workers: int, batch_size: int = 4) -> MultimodalLoader:
    collate = MultimodalCollate(["image", "text"], targets=(), pad_values={"text": 0})
    return MultimodalLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                            tracker=BadSampleTracker("train", policy))


def test_bad_samples_from_workers_are_counted_in_the_main_process(tmp_path, pipelines, caplog):
    loader = _loader(_dataset(tmp_path, pipelines, bad={1, 4, 5, 6, 7}), BadSamplePolicy(max_bad_fraction=0.5),
                     workers=2)
    with caplog.at_level(logging.WARNING, logger="polyfuse.data.errors"):
        batches = list(loader)
    # bad samples are placeholder rows (batch.valid False); batch 2 (samples 4-7) is all placeholders
    assert [b.batch_size for b in batches] == [4, 4, 4] and all("bad_samples" not in b.extras for b in batches)
    assert [b.num_valid for b in batches] == [3, 0, 4]
    assert loader.tracker.history == [{"epoch": 0, "good": 7, "bad": 5, "index_errors": 0}]
    assert "1.jpg" in caplog.text and "skipped 5 of 12 samples (5 cannot decode image)" in caplog.text
    valid_ids = [x for b in batches for x, ok in zip(b.ids, b.valid_or_full().tolist()) if ok]
    assert sorted(valid_ids) == sorted(f"data:{i + 2}" for i in (0, 2, 3, 8, 9, 10, 11))
    list(loader)  # the second epoch starts from zero
    assert loader.tracker.history[1]["bad"] == 5


def test_strict_mode_error_names_the_file_through_a_worker(tmp_path, pipelines):
    loader = _loader(_dataset(tmp_path, pipelines, bad={2}, strict=True), BadSamplePolicy(strict=True), workers=1)
    with pytest.raises(DataFileError, match=r"2\.jpg") as error:
        list(loader)
    traceback.clear_frames(error.tb)  # let the worker stop now rather than when GC finds the frames


def test_too_many_bad_samples_stop_with_a_clear_error(tmp_path, pipelines):
    loader = _loader(_dataset(tmp_path, pipelines, bad={0, 3, 7}), BadSamplePolicy(max_bad_fraction=0.2), workers=0)
    with pytest.raises(TooManyBadSamplesError, match=r"train: 3 of 12 samples \(25.0%\) are bad, more than "
                                                     r"data.bad_samples.max_bad_fraction=0.2.*0.jpg"):
        list(loader)
    early = _loader(_dataset(tmp_path, pipelines, bad={0, 3, 7}),
                    BadSamplePolicy(max_bad_fraction=0.2, min_samples=4), workers=0)
    with pytest.raises(TooManyBadSamplesError, match="checked mid-epoch"):
        next(iter(early))


def test_an_epoch_cut_short_is_summarised_but_not_judged(tmp_path, pipelines):
    loader = _loader(_dataset(tmp_path, pipelines, bad={0, 1}), BadSamplePolicy(max_bad_fraction=0.1), workers=0)
    iterator = iter(loader)
    next(iterator)
    iterator.close()  # what a sanity check or limit_val_batches does
    assert loader.tracker.history == [{"epoch": 0, "good": 2, "bad": 2, "index_errors": 0}]

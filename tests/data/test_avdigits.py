"""Integrity of the embedded AV-digits dataset and errors on bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from polyfuse.data.avdigits import AVDigitsDataset, read_metadata
from polyfuse.data.io import DataFileError, load_audio, load_image


def test_counts_and_disjoint_splits(avdigits_root: Path):
    info = json.loads((avdigits_root / "info.json").read_text())
    records = read_metadata(avdigits_root)
    by_split = {}
    for record in records:
        by_split.setdefault(record["split"], []).append(record)
    assert {s: len(r) for s, r in by_split.items()} == info["counts"]
    assert sum(len(by_split[s]) for s in ("train", "val", "test")) == 1797  # sklearn digits
    ids = {s: {r["id"] for r in by_split[s]} for s in ("train", "val", "test")}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    images = {s: {r["image"] for r in by_split[s]} for s in ("train", "val", "test", "test_real")}
    assert not images["train"] & images["test"] and not images["val"] & images["test"]
    assert images["test_real"] == images["test"]  # the real-voice split reuses the test images
    labels = [r["label"] for r in records]
    assert set(labels) == set(range(10))


def test_every_file_loads(avdigits_root: Path):
    records = read_metadata(avdigits_root)
    seen = set()
    for record in records:
        for key in ("image", "audio"):
            if record[key] in seen:
                continue
            seen.add(record[key])
            if key == "image":
                image = load_image(avdigits_root / record[key])
                assert image.shape == (1, 32, 32) and image.dtype == torch.uint8
            else:
                audio = load_audio(avdigits_root / record[key])
                assert audio.dim() == 1 and 800 < audio.numel() < 20000 and torch.isfinite(audio).all()
        for qa in record["qa"]:
            assert len(qa["answers"]) == 10


def test_dataset_sample_and_missing_modalities(avdigits_root: Path):
    dataset = AVDigitsDataset(avdigits_root, "val", missing={"audio": 0.5}, missing_seed=3)
    sample = dataset[0]
    assert sample["image"].shape == (1, 32, 32) and sample["image"].dtype == torch.float32
    assert sample["text"][0].item() == dataset.tokenizer.token_to_id("[CLS]")
    absent = [i for i in range(len(dataset)) if dataset[i]["audio"] is None]
    assert 0.35 * len(dataset) < len(absent) < 0.65 * len(dataset)
    again = AVDigitsDataset(avdigits_root, "val", missing={"audio": 0.5}, missing_seed=3)
    assert absent == [i for i in range(len(again)) if again[i]["audio"] is None]  # same every epoch
    only_image = AVDigitsDataset(avdigits_root, "val", modalities=["image"])
    assert "audio" not in only_image[0] and "text" not in only_image[0]


def test_unknown_split_and_modality_list_valid_choices(avdigits_root: Path):
    with pytest.raises(ValueError, match="test_real"):
        AVDigitsDataset(avdigits_root, "training")
    with pytest.raises(ValueError, match="image, audio, text"):
        AVDigitsDataset(avdigits_root, "val", modalities=["video"])


@pytest.fixture
def small_copy(avdigits_root: Path, tmp_path: Path) -> Path:
    """A copy of the dataset's files for the first 12 validation samples."""
    root = tmp_path / "avdigits"
    (root / "images").mkdir(parents=True)
    (root / "audio").mkdir()
    shutil.copy(avdigits_root / "info.json", root)
    shutil.copy(avdigits_root / "tokenizer.json", root)
    records = [r for r in read_metadata(avdigits_root) if r["split"] == "val"][:12]
    for record in records:
        shutil.copy(avdigits_root / record["image"], root / record["image"])
        shutil.copy(avdigits_root / record["audio"], root / record["audio"])
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def test_missing_file_is_named(small_copy: Path):
    record = read_metadata(small_copy)[5]
    (small_copy / record["audio"]).unlink()
    with pytest.raises(DataFileError, match=record["audio"].split("/")[-1]):
        AVDigitsDataset(small_copy, "val")


def test_corrupt_files_are_named(small_copy: Path):
    records = read_metadata(small_copy)
    (small_copy / records[2]["image"]).write_bytes(b"not a png at all")
    with pytest.raises(DataFileError, match=r"cannot decode image file .*" + records[2]["image"].split("/")[-1]):
        AVDigitsDataset(small_copy, "val")
    shutil.copy(small_copy / records[3]["image"], small_copy / records[2]["image"])
    (small_copy / records[4]["audio"]).write_bytes(b"fLaC garbage")
    with pytest.raises(DataFileError, match=r"cannot decode audio file .*" + records[4]["audio"].split("/")[-1]):
        AVDigitsDataset(small_copy, "val")


def test_malformed_metadata_line_is_named(small_copy: Path):
    path = small_copy / "metadata.jsonl"
    lines = path.read_text().splitlines()
    lines[3] = lines[3][:40]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"metadata.jsonl, line 4"):
        AVDigitsDataset(small_copy, "val")


def test_missing_dataset_directory_is_named(tmp_path: Path):
    with pytest.raises(DataFileError, match="info.json"):
        AVDigitsDataset(tmp_path / "nowhere", "train")

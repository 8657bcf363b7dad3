"""Every kind of bad input becomes a counted bad sample with a reason (strict mode: an error naming
the file), and a damaged shard counts every sample it could not deliver."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from polyfuse.data import DataFileError, DecodedDataset, DecodedIterableDataset, SampleDecoder, ShardReader
from polyfuse.data.collate import MultimodalCollate
from polyfuse.data.errors import BadSample, BadSamplePolicy, BadSampleTracker
from polyfuse.data.shard_writer import write_shards

from .media import write_audio, write_image


def write_png_bomb(path: Path, side: int = 30000) -> Path:
    """A 200-byte PNG that claims ``side x side`` pixels (900 Mpx, over twice PIL's bomb limit):
    PIL refuses it at ``Image.open`` with ``DecompressionBombError`` before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


class _Records:
    """A map-style reader over prepared raw samples."""

    targets = ()

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


def _rows(tmp_path: Path) -> list[dict]:
    good = write_image(tmp_path / "good.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    audio = write_audio(tmp_path / "good.wav")
    broken_audio = tmp_path / "broken.wav"
    broken_audio.write_bytes(audio.read_bytes()[:30])  # a RIFF header cut short
    return [
        {"id": "ok", "image": str(good), "audio": str(audio), "text": "a dog"},
        {"id": "bomb", "image": str(write_png_bomb(tmp_path / "bomb.png")), "audio": None, "text": "a dog"},
        {"id": "cut", "image": str(truncated), "audio": None, "text": "a dog"},
        {"id": "noise", "image": None, "audio": str(broken_audio), "text": "a dog"},
        {"id": "gone", "image": str(tmp_path / "missing.jpg"), "audio": None, "text": "a dog"},
        {"id": "blank", "image": str(good), "audio": None, "text": "  "},
    ]


def test_each_bad_file_is_one_bad_sample_with_its_reason(tmp_path, pipelines):
    dataset = DecodedDataset(_Records(_rows(tmp_path)), SampleDecoder(("image", "audio", "text"), **pipelines))
    samples = [dataset[i] for i in range(len(dataset))]
    assert not isinstance(samples[0], BadSample)
    bad = {s.id: s for s in samples[1:]}
    assert all(isinstance(s, BadSample) for s in bad.values())
    assert "decompression bomb" in bad["bomb"].reason and bad["bomb"].source.endswith("bomb.png")
    assert "cannot decode image file" in bad["cut"].reason and bad["cut"].source.endswith("truncated.jpg")
    assert "cannot decode audio file" in bad["noise"].reason and bad["noise"].source.endswith("broken.wav")
    assert "image file not found" in bad["gone"].reason
    assert "empty caption" in bad["blank"].reason
    # collated: placeholder rows, counted by the tracker with their reasons
    batch = MultimodalCollate(("image", "audio", "text"), targets=())(samples)
    assert batch.batch_size == 6 and batch.valid.tolist() == [True] + [False] * 5
    tracker = BadSampleTracker("train", BadSamplePolicy(max_bad_fraction=1.0))
    tracker.observe(batch)
    assert tracker.end_epoch() == {"epoch": 0, "good": 1, "bad": 5, "index_errors": 0}


@pytest.mark.parametrize("index, name", [(1, "bomb.png"), (2, "truncated.jpg"), (3, "broken.wav")])
def test_strict_mode_fails_fast_naming_the_file(tmp_path, pipelines, index, name):
    rows = _rows(tmp_path)
    dataset = DecodedDataset(_Records(rows), SampleDecoder(("image", "audio", "text"), **pipelines), strict=True)
    dataset[0]
    with pytest.raises(DataFileError, match=name):
        dataset[index]


@pytest.mark.parametrize("cut", ["middle", "missing"])
def test_a_damaged_shard_counts_every_sample_it_could_not_deliver(tmp_path, pipelines, cut):
    pytest.importorskip("webdataset")
    image = write_image(tmp_path / "x.jpg")
    samples = ({"id": f"s{i}", "image": str(image), "text": f"a dog {i}"} for i in range(12))
    index = write_shards(samples, tmp_path / "shards" / "train-%06d.tar", maxcount=4)
    assert [s["samples"] for s in index["shards"]] == [4, 4, 4]
    damaged = tmp_path / "shards" / "train-000001.tar"
    if cut == "middle":  # the first member of the shard's 3rd sample ends half way: sample 4 is read,
        data = damaged.read_bytes()  # sample 5 (complete, but the reader cannot know) and 6, 7 are lost
        damaged.write_bytes(data[: data.find(b"000000006") + 1024])
    else:
        damaged.unlink()
    reader = ShardReader([str(tmp_path / "shards" / f"train-{i:06d}.tar") for i in range(3)])
    results = list(DecodedIterableDataset(reader, SampleDecoder(("image", "text"), **pipelines)))
    bad = [r for r in results if isinstance(r, BadSample)]
    good = [r for r in results if not isinstance(r, BadSample)]
    assert len(results) == 12  # every sample of the index is delivered or counted
    delivered = 1 if cut == "middle" else 0
    assert len(bad) == 4 - delivered and len(good) == 8 + delivered
    assert all(b.source.endswith("train-000001.tar") for b in bad)
    assert f"{4 - delivered} of its 4 samples lost ({delivered} read)" in bad[0].reason

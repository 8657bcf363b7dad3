"""Audio clips: windowed reading, cropping, resampling, padding with masks, bad files."""

from __future__ import annotations

import pytest
import torch

from polyfuse.data import AudioPipeline, DataFileError, EncodedMedia, MultimodalCollate

from .media import corrupt, write_audio


def test_audio_pipeline_crops_resamples_and_reads_only_the_window(tmp_path):
    import soundfile as sf

    path = write_audio(tmp_path / "long.wav", seconds=2.0, rate=16000)
    full, _ = sf.read(path, dtype="float32")
    start = AudioPipeline(sample_rate=16000, max_seconds=0.5, eval_crop="start")(path)
    center = AudioPipeline(sample_rate=16000, max_seconds=0.5, eval_crop="center")(path)
    assert torch.equal(start, torch.from_numpy(full[:8000]))
    assert torch.equal(center, torch.from_numpy(full[12000:20000]))
    random = AudioPipeline(sample_rate=8000, max_seconds=0.5, train_crop="random")
    assert random(path, train=True).shape == (4000,)
    encoded = AudioPipeline(sample_rate=16000, max_seconds=None)
    assert torch.equal(encoded(EncodedMedia(path.read_bytes(), "long.wav")), encoded(path))
    empty = tmp_path / "empty.wav"
    sf.write(empty, torch.zeros(0).numpy(), 16000)
    with pytest.raises(DataFileError, match="empty.wav is empty"):
        encoded(empty)


def test_fixed_length_audio_padding_keeps_masks(tmp_path):
    pipeline = AudioPipeline(sample_rate=8000, max_seconds=0.5, pad_to_max=True)
    short = pipeline(write_audio(tmp_path / "a.wav", seconds=0.1, rate=8000))
    collate = MultimodalCollate(["audio"], targets=(), pad_to={"audio": pipeline.max_samples})
    batch = collate([{"id": "a", "audio": short}, {"id": "b", "audio": None}])
    assert batch.inputs["audio"].values.shape == (2, 4000)
    assert batch.inputs["audio"].mask.sum(1).tolist() == [800, 0]


def test_corrupt_and_missing_audio_name_the_file(tmp_path):
    pipeline = AudioPipeline(sample_rate=8000)
    with pytest.raises(DataFileError, match="cannot decode audio file .*bad.flac"):
        pipeline(corrupt(tmp_path / "bad.flac"))
    with pytest.raises(DataFileError, match="audio file not found: .*nope.wav"):
        pipeline(tmp_path / "nope.wav")
    with pytest.raises(DataFileError, match="shard.tar:k.flac"):
        pipeline(EncodedMedia(b"junk", "shard.tar:k.flac"))

"""Video files given to ``polyfuse.load(run).predict(video=...)``: decoded and sampled as the run's data
module does in evaluation, with the file's sound track as the audio input (absent when it has none),
and a clear error naming a corrupt or truncated file."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import polyfuse
from polyfuse.data.io import DataFileError
from polyfuse.data.video_writer import write_video
from polyfuse.inference import Preprocessing, export_run
from polyfuse.training.run_dir import config_file

from ..cli.run_factory import untrained_run
from .tiny_runs import assert_same_predictions

pytest.importorskip("av")

COUNT = 4  # clips compared between the data module's batch and predict on their files


@pytest.fixture
def video_run(compose_train, tmp_path: Path) -> Path:
    """A run directory of ``experiment=avdigits_video`` (video + its sound track) with random weights:
    what ``polyfuse.load`` needs (config.yaml + best checkpoint), without training."""
    run = tmp_path / "video_run"
    untrained_run(compose_train(["experiment=avdigits_video", f"data.batch_size={COUNT}",
                                 f"data.eval_batch_size={COUNT}"]), run)
    return run


def _test_split(run: Path) -> tuple[list[str], object]:
    """The video files of the first test batch in loader order, and that batch from the run's data module."""
    data = OmegaConf.load(config_file(run)).data
    datamodule = hydra.utils.instantiate(data)
    datamodule.setup("test")
    reader = datamodule.reader("test")
    paths = [str(reader[index]["video"]) for index in range(COUNT)]
    return paths, next(iter(datamodule.test_dataloader()[0]))


def test_video_files_predict_as_the_data_modules_test_batch(video_run: Path) -> None:
    model = polyfuse.load(video_run)
    assert model.preprocessing.video is not None and model.modalities == ["video", "audio"]
    paths, expected_batch = _test_split(video_run)
    batch, single = model.preprocess(video=paths)
    assert not single
    for modality in ("video", "audio"):  # the sound tracks came from the same files
        given, expected = batch.inputs[modality], expected_batch.inputs[modality]
        torch.testing.assert_close(given.values, expected.values, rtol=0, atol=0)
        assert torch.equal(given.mask, expected.mask) and torch.equal(given.present, expected.present)
    assert bool(batch.inputs["audio"].present.all())
    assert_same_predictions(model.predict(video=paths), model.predict_batch(expected_batch))
    alone = model.predict(video=paths[0])  # one file: one prediction (its sound track unpadded)
    assert alone["probs"].shape == (10,) and isinstance(alone["label"], int)
    muted = model.predict(video=paths[0], sound_track=False)  # audio absent: another input, other logits
    assert not torch.allclose(muted["logits"], alone["logits"])


def test_a_video_without_sound_track_has_audio_absent(video_run: Path, tmp_path: Path) -> None:
    model = polyfuse.load(video_run)
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    silent = write_video(tmp_path / "silent.mp4", frames)
    batch, _ = model.preprocess(video=[str(silent)])
    assert batch.inputs["audio"].present.tolist() == [False]
    assert batch.inputs["video"].present.tolist() == [True]
    # 6 frames of T = 8: kept once each, and the batch is padded to its longest clip, as in the data module
    assert batch.inputs["video"].values.shape == (1, 6, 1, 32, 32) and bool(batch.inputs["video"].mask.all())
    prediction = model.predict(video=silent)
    assert torch.isfinite(prediction["logits"]).all()
    assert_same_predictions(prediction, model.predict(video=silent, sound_track=False))


def test_corrupt_and_truncated_video_files_are_named(video_run: Path, tmp_path: Path) -> None:
    model = polyfuse.load(video_run)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 64)
    with pytest.raises(DataFileError, match="garbage.mp4"):
        model.predict(video=garbage)
    paths, _ = _test_split(video_run)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(Path(paths[0]).read_bytes()[:1500])
    with pytest.raises(DataFileError, match="truncated.mp4"):
        model.predict(video=truncated)


def test_an_export_keeps_the_video_preprocessing(video_run: Path, tmp_path: Path) -> None:
    model = polyfuse.load(video_run)
    settings = model.preprocessing.to_dict()
    assert settings["video"] == dict(num_frames=8, sampling="segments", fps=None, size=32, mode="L", mean=[0.5],
                                     std=[0.5], resize="shortest", interpolation="bilinear")
    exported = polyfuse.load(export_run(video_run, tmp_path / "export"))  # settings through inference.json
    paths, _ = _test_split(video_run)
    assert_same_predictions(exported.predict(video=paths[:2]), model.predict(video=paths[:2]))


def test_video_preprocessor_checks_its_inputs(video_run: Path) -> None:
    again = Preprocessing.from_dict(polyfuse.load(video_run).preprocessing.to_dict())
    assert again.video is not None
    clip = torch.zeros(3, 1, 32, 32)
    assert torch.equal(again.video(clip), clip)  # a preprocessed clip passes unchanged
    with pytest.raises(ValueError, match=r"\(T, 1, 32, 32\) with 1 <= T <= 8"):
        again.video(torch.zeros(9, 1, 32, 32))
    with pytest.raises(TypeError, match="video input must be a video file path"):
        again.video(np.zeros((8, 32, 32), dtype=np.uint8))

"""Video decoding, frame sampling, clip-wide transforms, the sound track as audio, collation and bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polyfuse.data import AudioPipeline, DataFileError, DecodedDataset, SampleDecoder, VideoPipeline
from polyfuse.data.collate import MultimodalCollate
from polyfuse.data.errors import BadSample, BadSamplePolicy, BadSampleTracker
from polyfuse.data.io import EncodedMedia
from polyfuse.data.video import is_video_source, read_sound_track
from polyfuse.data.video_sampling import fixed_rate_indices, segment_indices

from .media import corrupt
from .video_media import write_clip


def test_segment_sampling_takes_the_centre_in_eval_and_stays_in_its_segment_in_train() -> None:
    assert segment_indices(16, 4, train=False) == [1, 5, 9, 13]
    torch.manual_seed(0)
    draws = [segment_indices(16, 4, train=True) for _ in range(50)]
    for draw in draws:
        assert [index // 4 for index in draw] == [0, 1, 2, 3]
    assert len({tuple(d) for d in draws}) > 1  # random offsets
    assert segment_indices(3, 8, train=True) == [0, 1, 2]  # a short clip: every frame once


def test_fixed_rate_sampling_spaces_frames_by_the_rate_ratio() -> None:
    assert fixed_rate_indices(100, 4, video_fps=30, fps=10, train=False) == [45, 48, 51, 54]  # 45 frames before, 45 after
    torch.manual_seed(0)
    for _ in range(20):
        frames = fixed_rate_indices(100, 4, video_fps=30, fps=10, train=True)
        assert [b - a for a, b in zip(frames, frames[1:])] == [3, 3, 3]
    assert fixed_rate_indices(5, 4, video_fps=30, fps=10, train=False) == [0, 3]  # shorter than the window


def test_pipeline_decodes_the_sampled_frames_of_a_file_and_of_bytes(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "clip.mp4")
    pipeline = VideoPipeline(num_frames=4, size=32, mode="L", train_crop_scale=None, mean=[0.0], std=[1.0])
    clip = pipeline(str(path))
    assert clip.shape == (4, 1, 32, 32) and clip.dtype == torch.float32
    # eval takes frames 1, 3, 5, 7 of the moving bar: the bar's column is where the frame says
    columns = clip[:, 0].mean(dim=1).argmax(dim=-1)
    assert torch.all(columns[1:] > columns[:-1])
    from_bytes = pipeline(EncodedMedia(path.read_bytes(), "shard.tar:clip.mp4"))
    assert torch.equal(from_bytes, clip)
    assert is_video_source(path) and not is_video_source("a.flac")


def test_the_training_transform_is_the_same_for_every_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = VideoPipeline(num_frames=6, size=16, train_crop_scale=(0.2, 0.5))
    from torchvision.transforms import v2
    pipeline.train_transform.transforms.insert(1, v2.RandomHorizontalFlip())
    static = torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8).expand(6, -1, -1, -1).clone()
    monkeypatch.setattr(pipeline, "decode", lambda source, train=False: static)
    torch.manual_seed(0)
    crops = [pipeline("any.mp4", train=True) for _ in range(4)]
    for clip in crops:
        assert clip.shape == (6, 3, 16, 16)
        assert torch.equal(clip, clip[:1].expand_as(clip))  # one crop and flip for the whole clip
    assert not all(torch.equal(crops[0], clip) for clip in crops[1:])  # but a new one per clip


def test_sound_track_is_audio_and_a_silent_clip_has_none(tmp_path: Path) -> None:
    sound = write_clip(tmp_path / "sound.mp4", seconds=1.0)
    silent = write_clip(tmp_path / "silent.mp4", sound=False)
    track = read_sound_track(sound, 16000)
    assert track is not None and 15000 < track.shape[0] < 20000  # resampled to 16 kHz (AAC pads a little)
    assert read_sound_track(silent, 8000) is None
    audio = AudioPipeline(sample_rate=8000, max_seconds=0.5)
    assert audio(str(sound)).shape == (4000,)
    assert audio(str(silent)) is None


def test_decoder_and_collate_give_video_with_frame_mask_and_audio_from_the_same_file(tmp_path: Path) -> None:
    decoder = SampleDecoder(["video", "audio"], video=VideoPipeline(num_frames=8, size=32, mode="L"),
                            audio=AudioPipeline(sample_rate=8000, max_seconds=0.5))
    long = decoder({"id": "long", "video": str(write_clip(tmp_path / "long.mp4", frames=8))})
    short = decoder({"id": "short", "video": str(write_clip(tmp_path / "short.mp4", frames=5, sound=False))})
    assert long["video"].shape == (8, 1, 32, 32) and long["audio"].shape == (4000,)
    assert short["video"].shape == (5, 1, 32, 32) and short["audio"] is None
    batch = MultimodalCollate(["video", "audio"], targets=())([long, short])
    video, audio = batch.inputs["video"], batch.inputs["audio"]
    assert video.values.shape == (2, 8, 1, 32, 32)
    assert video.mask.tolist() == [[True] * 8, [True] * 5 + [False] * 3]
    assert torch.all(video.values[1, 5:] == 0)
    assert video.present.tolist() == [True, True] and audio.present.tolist() == [True, False]
    assert audio.mask[0].sum() == 4000


def test_batch_without_any_video_keeps_the_clip_shape() -> None:
    collate = MultimodalCollate(["video"], targets=(), shapes={"video": (4, 1, 8, 8)})
    batch = collate([{"id": "a", "video": None}, BadSample("b", "b.mp4", "broken")])
    assert batch.inputs["video"].values.shape == (2, 4, 1, 8, 8)
    assert not batch.inputs["video"].present.any() and not batch.inputs["video"].mask.any()


def test_corrupt_and_truncated_clips_are_skipped_and_counted_or_raise_in_strict_mode(tmp_path: Path) -> None:
    good = write_clip(tmp_path / "good.mp4")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    rows = [{"id": "ok", "video": str(good)}, {"id": "cut", "video": str(truncated)},
            {"id": "junk", "video": str(corrupt(tmp_path / "junk.mp4"))},
            {"id": "gone", "video": str(tmp_path / "missing.mp4")}]
    decoder = SampleDecoder(["video", "audio"], video=VideoPipeline(num_frames=4, size=32),
                            audio=AudioPipeline(sample_rate=8000, max_seconds=0.5))
    dataset = DecodedDataset(rows, decoder)
    samples = [dataset[i] for i in range(len(rows))]
    assert [isinstance(s, BadSample) for s in samples] == [False, True, True, True]
    assert "truncated.mp4" in samples[1].source and "cannot decode video file" in samples[1].reason
    batch = MultimodalCollate(["video", "audio"], targets=(), shapes={"video": (4, 3, 32, 32)})(samples)
    assert batch.valid.tolist() == [True, False, False, False]
    tracker = BadSampleTracker("train", BadSamplePolicy(max_bad_fraction=1.0))
    tracker.observe(batch)
    assert tracker.good == 1 and len(tracker.bad) == 3
    with pytest.raises(DataFileError, match="truncated.mp4"):
        DecodedDataset(rows, decoder, strict=True)[1]


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_decoded_pixels_are_pyav_conversions_of_every_frame_across_clip_sizes(tmp_path: Path, mode: str) -> None:
    """The pipeline's shared reformatter gives what ``VideoFrame.to_ndarray(format=...)`` gives, frame by
    frame, and follows a change of frame size between clips."""
    import av
    import numpy as np

    pipeline = VideoPipeline(num_frames=8, size=32, mode=mode)
    for size in (32, 48, 32):
        path = write_clip(tmp_path / f"clip{size}.mp4", size=size, sound=False)
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="gray" if mode == "L" else "rgb24")
                      for frame in container.decode(container.streams.video[0])]
        expected = torch.from_numpy(np.stack(frames))
        expected = expected.unsqueeze(1) if mode == "L" else expected.permute(0, 3, 1, 2)
        assert torch.equal(pipeline.decode(str(path)), expected)

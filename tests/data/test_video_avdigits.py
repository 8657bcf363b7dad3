"""The embedded AV-digits clips: small, rebuilt bit for bit by their builder, decoded through the user
path, and the video experiments train end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from polyfuse.data import AudioPipeline, MediaFolderReader, SampleDecoder, VideoPipeline

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "data" / "avdigits" / "video"
SPLITS = ("train", "val", "test", "test_real")


def test_clips_are_small_and_every_split_has_all_ten_digits() -> None:
    size = sum(path.stat().st_size for path in CLIPS.rglob("*") if path.is_file())
    assert size <= 5e6, f"AV-digits clips take {size / 1e6:.1f} MB, over the 5 MB budget"
    for split in SPLITS:
        reader = MediaFolderReader(CLIPS, split=split)
        assert reader.modalities == ("text", "video") and {r["label"] for r in reader} == set(range(10))


def test_builder_rebuilds_the_committed_clips_bit_for_bit(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("build_avdigits_video", ROOT / "scripts" / "build_avdigits_video.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    source = ROOT / "data" / "avdigits"
    records = [json.loads(line) for line in (source / "metadata.jsonl").read_text().splitlines() if line.strip()]
    for split in ("train", "test_real"):
        committed = [json.loads(line) for line in (CLIPS / split / "metadata.jsonl").read_text().splitlines()][:2]
        chosen = [r for r in records if r["split"] == split][:2]
        rows = [builder.build_clip(record, source, tmp_path / split, seed=0, frames=8) for record in chosen]
        assert rows == committed
        for row in rows:
            assert (tmp_path / split / row["video"]).read_bytes() == (CLIPS / split / row["video"]).read_bytes()


def test_a_clip_decodes_to_a_moving_digit_with_its_spoken_name() -> None:
    reader = MediaFolderReader(CLIPS, split="test_real")
    decoder = SampleDecoder(["video", "audio"], video=VideoPipeline(num_frames=8, size=32, mode="L"),
                            audio=AudioPipeline(sample_rate=8000, max_seconds=1.5))
    sample = decoder(reader[0])
    clip, audio = sample["video"], sample["audio"]
    assert clip.shape == (8, 1, 32, 32) and audio is not None and audio.abs().max() > 0.05
    assert (clip[0] - clip[-1]).abs().mean() > 0.05  # the digit moved


METRICS = {"avdigits_video": "test/acc", "avdigits_video_retrieval": "test/rsum", "avdigits_video_avc": "test/itm_acc"}


@pytest.mark.parametrize("experiment", list(METRICS))
def test_video_experiment_trains_a_step(compose_train, experiment: str) -> None:
    from polyfuse.cli.train import train

    cfg = compose_train([f"experiment={experiment}", "debug=fdr", "data.batch_size=4"])
    summary, _ = train(cfg)  # one training, validation and test step on the committed clips
    metric = METRICS[experiment]
    assert metric in summary["test"] and summary["test"][metric] == summary["test"][metric]  # a number, not NaN

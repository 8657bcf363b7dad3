"""Video readers: a CSV clip list (Kinetics / UCF-101), class folders, MSR-VTT captions, WebDataset
shards with .mp4 members, and the video folder config."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest

from polyfuse.data import AudioPipeline, MediaFolderReader, MSRVTTReader, SampleDecoder, ShardReader, VideoPipeline
from polyfuse.data.io import DataFileError, EncodedMedia
from polyfuse.data.shard_writer import write_shards

from .video_media import write_clip


def _clip_list(root: Path) -> Path:
    for split, names in (("train", ["a", "b", "c", "d"]), ("val", ["e", "f"]), ("test", ["g", "h"])):
        rows = ["path,label"]
        for index, name in enumerate(names):
            write_clip(root / "clips" / f"{name}.mp4", frames=6 + index % 3, sound=index % 2 == 0)
            rows.append(f"clips/{name}.mp4,{['walk', 'run'][index % 2]}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def test_csv_clip_list_reads_paths_and_named_labels(tmp_path: Path) -> None:
    root = _clip_list(tmp_path)
    reader = MediaFolderReader(root, metadata="train.csv", columns={"video": "path"}, labels=["walk", "run"])
    assert len(reader) == 4 and reader.modalities == ("video",) and reader.targets == ("label",)
    assert reader[1]["video"] == str(root / "clips" / "b.mp4") and reader[1]["label"] == 1
    assert reader[1]["id"] == "clips/b.mp4"  # a CSV without ids: the clip's path
    with pytest.raises(DataFileError, match="labels are class names"):
        MediaFolderReader(root, metadata="train.csv", columns={"video": "path"})


def test_class_folders_of_clips(tmp_path: Path) -> None:
    for label in ("jump", "sit"):
        write_clip(tmp_path / "train" / label / "x.mp4")
    reader = MediaFolderReader(tmp_path, split="train")
    assert [(r["id"], r["label"], Path(r["video"]).name) for r in reader] == [("jump/x", 0, "x.mp4"), ("sit/x", 1, "x.mp4")]


def test_msrvtt_official_layout_and_plain_mapping(tmp_path: Path) -> None:
    official = {"videos": [{"video_id": "video0", "split": "train"}, {"video_id": "video1", "split": "test"}],
                "sentences": [{"video_id": "video0", "caption": "a man sings"},
                              {"video_id": "video0", "caption": "someone is singing"},
                              {"video_id": "video1", "caption": "a dog runs"},
                              {"video_id": "video0", "caption": ""}]}
    path = tmp_path / "info.json"
    path.write_text(json.dumps(official))
    train = MSRVTTReader(path, tmp_path / "videos", split="train")
    assert [r["id"] for r in train] == ["video0_0", "video0_1"] and train[1]["text"] == "someone is singing"
    assert train[0]["video"] == str(tmp_path / "videos" / "video0.mp4")
    assert len(train.bad_records) == 1  # the empty caption, counted
    test = MSRVTTReader(path, tmp_path / "videos", split="test", unit="video")
    assert [(r["id"], r["captions"]) for r in test] == [("video1", ["a dog runs"])]
    mapping = tmp_path / "captions.json"
    mapping.write_text(json.dumps({"v7": ["one", "two"], "v8": []}))
    per_video = MSRVTTReader(mapping, tmp_path, unit="video")
    assert [(r["id"], r["text"]) for r in per_video] == [("v7", "one"), ("v8", None)]


def test_shards_carry_mp4_members_and_their_sound_track(tmp_path: Path) -> None:
    pytest.importorskip("webdataset")
    root = _clip_list(tmp_path / "clips")
    reader = MediaFolderReader(root, metadata="train.csv", columns={"video": "path"}, labels=["walk", "run"])
    write_shards((reader[i] for i in range(len(reader))), tmp_path / "shards" / "s-%06d.tar", maxcount=2,
                 modalities=["video"], targets=["label"])
    raws = list(ShardReader(tmp_path / "shards"))
    assert len(raws) == 4 and all(isinstance(r["video"], EncodedMedia) for r in raws)
    assert raws[0]["video"].extension == "mp4" and raws[0]["audio"] is None
    decoder = SampleDecoder(["video", "audio"], video=VideoPipeline(num_frames=4, size=16),
                            audio=AudioPipeline(sample_rate=8000, max_seconds=0.5))
    samples = [decoder(raw) for raw in raws]
    assert [s["video"].shape for s in samples] == [(4, 3, 16, 16)] * 4
    by_label = {s["label"]: s["audio"] is not None for s in samples}
    assert by_label == {0: True, 1: False}  # the even rows were written with a sound track


def test_video_folder_config_gives_clips_with_frame_masks_and_sound_tracks(compose_train, tmp_path: Path) -> None:
    root = _clip_list(tmp_path / "clips")
    cfg = compose_train(["data=video_folder", f"data.root={root}", "data.splits.train.labels=[walk,run]",
                         "data.video.size=16", "data.video.num_frames=8", "data.audio.sample_rate=8000",
                         "data.audio.max_seconds=0.5", "data.num_workers=0", "data.batch_size=4"])
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    video, audio = batch.inputs["video"], batch.inputs["audio"]
    assert video.values.shape == (4, 8, 3, 16, 16)
    assert sorted(video.mask.sum(1).tolist()) == [6, 6, 7, 8]  # clips of 6, 7, 8, 6 frames
    assert audio.present.sum() == 2 and batch.targets["label"].tolist() is not None

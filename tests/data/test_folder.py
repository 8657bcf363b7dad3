"""Media folders: audio-visual metadata.jsonl with absent modalities, class folders, audio clips."""

from __future__ import annotations

import json

import pytest

from polyfuse.data import DataFileError, MediaFolderReader, MultimodalCollate
from polyfuse.data.errors import BadSample

from .media import corrupt, decode_all, write_audio, write_image

AV = ("image", "audio", "text")


def _av_folder(root):
    split = root / "train"
    write_image(split / "frames" / "c0.jpg", seed=0)
    write_audio(split / "audio" / "c0.flac", seed=0, rate=16000)
    write_image(split / "frames" / "c1.jpg", seed=1)                # a video without audio
    write_audio(split / "audio" / "c2.wav", seed=2, rate=8000)      # a clip without frame or caption
    corrupt(split / "audio" / "c3.flac")
    write_image(split / "frames" / "c3.jpg", seed=3)
    lines = [
        json.dumps({"id": "c0", "image": "frames/c0.jpg", "audio": "audio/c0.flac", "text": "a dog barks", "label": 1}),
        json.dumps({"id": "c1", "image": "frames/c1.jpg", "audio": None, "text": "a cat", "label": 0}),
        '{"id": "broken", "image": ',
        json.dumps({"id": "c2", "audio": "audio/c2.wav", "label": 1}),
        json.dumps({"id": "c3", "image": "frames/c3.jpg", "audio": "audio/c3.flac", "text": "a car", "label": 0}),
        json.dumps({"id": "c4", "image": "frames/missing.jpg", "text": "gone", "label": 0}),
    ]
    (split / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_audio_visual_metadata_with_absent_modalities(tmp_path, pipelines):
    reader = MediaFolderReader(_av_folder(tmp_path), split="train")
    assert len(reader) == 5 and reader.modalities == AV and reader.targets == ("label",)
    (bad_line,) = reader.bad_records
    assert bad_line.source.endswith("metadata.jsonl, line 3") and "malformed JSON line" in bad_line.reason
    samples = decode_all(reader, pipelines, AV)
    good = [s for s in samples if not isinstance(s, BadSample)]
    bad = [s for s in samples if isinstance(s, BadSample)]
    assert [s["id"] for s in good] == ["c0", "c1", "c2"]
    assert sorted(b.id for b in bad) == ["c3", "c4"]
    assert any("c3.flac" in b.source and "cannot decode audio" in b.reason for b in bad)
    assert any("missing.jpg" in b.reason and "not found" in b.reason for b in bad)
    batch = MultimodalCollate(list(AV), targets=("label",))(good)
    assert batch.inputs["audio"].present.tolist() == [True, False, True]
    assert batch.inputs["image"].present.tolist() == [True, True, False]
    assert batch.inputs["text"].present.tolist() == [True, True, False]
    # 16 kHz and 8 kHz clips both come out at 8 kHz, cropped to 0.25 s
    assert batch.inputs["audio"].mask.sum(1).tolist() == [2000, 0, 2000]


def test_class_folders_pair_files_with_the_same_stem(tmp_path, pipelines):
    for label, name in enumerate(["cat", "dog"]):
        for index in range(2):
            write_image(tmp_path / "val" / name / f"{index}.png", seed=index)
            if index == 0:
                write_audio(tmp_path / "val" / name / f"{index}.wav", seed=index)
    reader = MediaFolderReader(tmp_path, split="val")
    assert reader.labels == ["cat", "dog"] and len(reader) == 4
    assert [(reader[i]["id"], reader[i]["label"], reader[i]["audio"] is not None) for i in range(4)] == [
        ("cat/0", 0, True), ("cat/1", 0, False), ("dog/0", 1, True), ("dog/1", 1, False)]
    with pytest.raises(DataFileError, match=r"class folders \['dog'\] are not in the configured labels"):
        MediaFolderReader(tmp_path, split="val", labels=["cat", "bird"])


def test_string_labels_need_a_label_list(tmp_path):
    write_audio(tmp_path / "clip.flac")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "clip.flac", "label": "speech"}) + "\n")
    with pytest.raises(DataFileError, match="labels are class names"):
        MediaFolderReader(tmp_path)
    reader = MediaFolderReader(tmp_path, labels=["music", "speech"])
    assert reader[0]["label"] == 1 and reader[0]["audio"] == str(tmp_path / "clip.flac") and reader[0]["image"] is None

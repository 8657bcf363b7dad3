"""Hugging Face datasets on local files: imagefolder, parquet, save_to_disk, column mapping."""

from __future__ import annotations

import json

import pytest

from polyfuse.data import DataFileError, HFDatasetReader, MultimodalCollate
from polyfuse.data.errors import BadSample

from .media import corrupt, decode_all, write_audio, write_image

pytest.importorskip("datasets")


def _imagefolder(root):
    split = root / "train"
    for index in range(3):
        write_image(split / f"{index}.png", seed=index)
    corrupt(split / "3.png")
    records = [{"file_name": f"{i}.png", "caption": f"a cat {i}", "label": i % 2} for i in range(4)]
    records[1]["caption"] = None  # an image without caption
    (split / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return root


def test_imagefolder_with_metadata_and_column_mapping(tmp_path, pipelines):
    root = _imagefolder(tmp_path / "imgs")
    reader = HFDatasetReader(root, split="train", builder="imagefolder",
                             columns={"image": "image", "text": "caption", "label": "label"},
                             load_kwargs={"cache_dir": str(tmp_path / "cache")})
    assert len(reader) == 4 and reader.modalities == ("image", "text") and reader.targets == ("label",)
    samples = decode_all(reader, pipelines)
    assert [type(s).__name__ for s in samples] == ["dict", "dict", "dict", "BadSample"]
    assert samples[1]["text"] is None and samples[0]["label"] == 0 and samples[2]["text"][2] == 7  # [CLS] a cat
    assert "3.png" in samples[3].source and "cannot decode image" in samples[3].reason
    batch = MultimodalCollate(["image", "text"], targets=reader.targets)(samples[:3])
    assert batch.inputs["text"].present.tolist() == [True, False, True]
    with pytest.raises(DataFileError, match=r"no column\(s\) \['text'\].*columns: \['caption', 'image', 'label'\]"):
        HFDatasetReader(root, split="train", builder="imagefolder", load_kwargs={"cache_dir": str(tmp_path / "cache")})


def test_parquet_and_save_to_disk_with_embedded_bytes(tmp_path, pipelines):
    import datasets

    image = write_image(tmp_path / "x.jpg").read_bytes()
    audio = write_audio(tmp_path / "x.flac", rate=8000).read_bytes()
    rows = {"uid": ["u0", "u1", "u2"],
            "img": [{"bytes": image, "path": "x.jpg"}, {"bytes": b"broken", "path": "y.jpg"}, None],
            "sound": [{"bytes": audio, "path": "x.flac"}, None, {"bytes": audio, "path": None}],
            "sentences": [["a dog", "the dog"], ["a cat"], []],
            "target": [1, 0, 1]}
    features = datasets.Features({"uid": datasets.Value("string"), "img": datasets.Image(),
                                  "sound": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                                  "sentences": datasets.Sequence(datasets.Value("string")),
                                  "target": datasets.Value("int64")})
    dataset = datasets.Dataset.from_dict(rows, features=features)
    dataset.to_parquet(str(tmp_path / "parquet" / "train-00000.parquet"))
    dataset.save_to_disk(str(tmp_path / "saved"))
    columns = {"id": "uid", "image": "img", "audio": "sound", "text": "sentences", "label": "target"}
    modalities = ("image", "audio", "text")
    for reader in (HFDatasetReader(tmp_path / "saved", columns=columns),
                   HFDatasetReader(tmp_path / "parquet", builder="parquet", columns=columns,
                                   data_files={"train": str(tmp_path / "parquet" / "*.parquet")},
                                   load_kwargs={"cache_dir": str(tmp_path / "cache")})):
        samples = decode_all(reader, pipelines, modalities)
        assert isinstance(samples[1], BadSample) and "y.jpg" in samples[1].source
        first, last = samples[0], samples[2]
        assert first["id"] == "u0" and first["captions"] == ["a dog", "the dog"] and first["audio"].shape == (2000,)
        assert last["image"] is None and last["text"] is None and last["audio"] is not None


def test_missing_directory_and_split_name_the_path(tmp_path):
    with pytest.raises(DataFileError, match="not found: .*nowhere"):
        HFDatasetReader(tmp_path / "nowhere")
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataFileError, match=r"no split 'validation'; it has \['train'\]"):
        HFDatasetReader(tmp_path / "dd", split="validation", columns={"text": "text"})

"""COCO captions_*.json and Karpathy split JSON readers, on files in the real layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polyfuse.data import CocoCaptionsReader, DataFileError, DecodedDataset, KarpathyCaptionsReader, SampleDecoder
from polyfuse.data.errors import BadSample

from .media import corrupt, decode_all, write_image, write_json


def _coco(tmp_path: Path) -> Path:
    """captions_val2017.json: 3 images (one without captions), 5 annotations (one dangling, one empty)."""
    for index, image_id in enumerate((139, 285, 632)):
        write_image(tmp_path / "val2017" / f"{image_id:012d}.jpg", seed=index)
    return write_json(tmp_path / "annotations" / "captions_val2017.json", {
        "info": {"description": "COCO 2017 Dataset"}, "licenses": [],
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "height": 32, "width": 40, "license": 1,
                    "coco_url": "", "date_captured": "", "flickr_url": ""} for i in (139, 285, 632)],
        "annotations": [
            {"id": 1, "image_id": 139, "caption": "A man sits on a bench."},
            {"id": 2, "image_id": 139, "caption": "a photo of a man"},
            {"id": 3, "image_id": 285, "caption": "The dog runs."},
            {"id": 4, "image_id": 999, "caption": "dangling"},
            {"id": 5, "image_id": 285, "caption": "  "},
        ]})


def test_coco_captions_one_sample_per_caption(tmp_path, pipelines):
    reader = CocoCaptionsReader(_coco(tmp_path), tmp_path / "val2017")
    assert len(reader) == 5  # 2 + 2 captions, + the image without captions
    assert [b.reason for b in reader.bad_records] == ["caption for unknown image_id 999"]
    assert "captions_val2017.json" in reader.bad_records[0].source
    first = reader[0]
    assert first["text"] == "A man sits on a bench." and first["image_id"] == 139
    assert first["image"].endswith("val2017/000000000139.jpg")
    samples = decode_all(reader, pipelines)
    assert samples[0]["image"].shape == (3, 16, 16) and samples[0]["text"][0].item() == 2  # [CLS]
    bad = [s for s in samples if isinstance(s, BadSample)]
    assert len(bad) == 1 and "empty caption" in bad[0].reason and "image 285" in bad[0].source
    lonely = [s for s in samples if not isinstance(s, BadSample) and s["image_id"] == 632]
    assert len(lonely) == 1 and lonely[0]["text"] is None and lonely[0]["image"] is not None


def test_coco_captions_image_unit_keeps_all_captions(tmp_path):
    reader = CocoCaptionsReader(_coco(tmp_path), tmp_path / "val2017", unit="image")
    assert len(reader) == 3
    assert reader[0]["captions"] == ["A man sits on a bench.", "a photo of a man"]
    assert reader[0]["id"] == "139"


def test_corrupt_and_missing_images_are_bad_or_strict_errors(tmp_path, pipelines):
    path = _coco(tmp_path)
    corrupt(tmp_path / "val2017" / "000000000139.jpg")
    (tmp_path / "val2017" / "000000000285.jpg").unlink()
    reader = CocoCaptionsReader(path, tmp_path / "val2017")
    decoder = SampleDecoder(("image", "text"), **pipelines)
    lenient = DecodedDataset(reader, decoder)
    results = [lenient[i] for i in range(len(reader))]
    reasons = [r.reason for r in results if isinstance(r, BadSample)]
    assert sum("cannot decode image file" in r and "139.jpg" in r for r in reasons) == 2
    assert sum("image file not found" in r and "285.jpg" in r for r in reasons) == 2  # one is also empty caption
    strict = DecodedDataset(reader, decoder, strict=True)
    with pytest.raises(DataFileError, match="000000000139.jpg"):
        strict[0]


def _karpathy(tmp_path: Path, coco: bool = True) -> Path:
    images = []
    for index, split in enumerate(("train", "restval", "val", "test")):
        name = f"COCO_val2014_{index:012d}.jpg" if coco else f"{index}.jpg"
        write_image(tmp_path / ("val2014" if coco else "flickr30k-images") / name, seed=index)
        entry = {"filename": name, "imgid": index, "split": split, "sentids": [2 * index, 2 * index + 1],
                 "sentences": [{"tokens": ["a", "dog"], "raw": f"A dog {index}.", "imgid": index, "sentid": 2 * index},
                               {"tokens": ["a", "cat"], "raw": f"A cat {index}.", "imgid": index,
                                "sentid": 2 * index + 1}]}
        if coco:
            entry.update(filepath="val2014", cocoid=1000 + index)
        images.append(entry)
    return write_json(tmp_path / f"dataset_{'coco' if coco else 'flickr30k'}.json",
                      {"images": images, "dataset": "coco" if coco else "flickr30k"})


def test_karpathy_coco_split_with_restval(tmp_path, pipelines):
    path = _karpathy(tmp_path)
    train = KarpathyCaptionsReader(path, tmp_path, split="train")
    assert len(train) == 4 and {train[i]["image_id"] for i in range(4)} == {1000, 1001}
    assert train[0]["image"] == str(tmp_path / "val2014" / "COCO_val2014_000000000000.jpg")
    assert len(KarpathyCaptionsReader(path, tmp_path, split="train", restval_in_train=False)) == 2
    test = KarpathyCaptionsReader(path, tmp_path, split="test", unit="image")
    assert len(test) == 1 and test[0]["captions"] == ["A dog 3.", "A cat 3."]
    sample = decode_all(test, pipelines)[0]
    assert sample["image"].dtype == torch.float32 and sample["caption"] == "A dog 3."


def test_karpathy_flickr30k_has_no_filepath(tmp_path):
    path = _karpathy(tmp_path, coco=False)
    val = KarpathyCaptionsReader(path, tmp_path / "flickr30k-images", split="val")
    assert val[0]["image"] == str(tmp_path / "flickr30k-images" / "2.jpg") and val[0]["image_id"] == 2
    with pytest.raises(DataFileError, match="no image in split 'dev'.*'test', 'train', 'val'"):
        KarpathyCaptionsReader(path, tmp_path, split="dev")


def test_malformed_annotation_file_names_the_file(tmp_path):
    bad = tmp_path / "captions_train2017.json"
    bad.write_text('{"images": [')
    with pytest.raises(DataFileError, match="captions_train2017.json: malformed JSON"):
        CocoCaptionsReader(bad, tmp_path)
    write_json(bad, {"images": []})
    with pytest.raises(DataFileError, match=r"no \['annotations'\]"):
        CocoCaptionsReader(bad, tmp_path)

"""Test helper: a slice of the embedded AV-digits data written in the real-world formats polyfuse reads.

Each writer returns the ``polyfuse-train`` overrides that train on what it wrote with the tiny
AV-digits encoders (32x32 greyscale ViT, word-level BERT over AV-digits' tokenizer):

* :func:`csv_dataset` -- open_clip-style TSV files (``filepath``, ``title``, ``label``): classification;
* :func:`coco_dataset` -- COCO captions JSON + an image folder: image-text retrieval (contrastive);
* :func:`shard_dataset` -- WebDataset tar shards written by :func:`polyfuse.data.write_shards`
  from the CSV files: classification.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from polyfuse.cli.config import repo_root

AVDIGITS = repo_root() / "data" / "avdigits"
SIZES = {"train": 64, "val": 20, "test": 20}
IMAGE = ["data.image.size=32", "data.image.mode=L", "data.image.mean=[0.5]", "data.image.std=[0.5]",
         "data.image.train_crop_scale=[0.8,1.0]"]


def _records() -> dict[str, list[dict]]:
    rows = [json.loads(line) for line in (AVDIGITS / "metadata.jsonl").read_text().splitlines() if line]
    return {split: [row for row in rows if row["split"] == split][:count] for split, count in SIZES.items()}


def _common(root: Path, modalities: str = "[image,text]") -> list[str]:
    return [f"data.root={root}", f"data.modalities={modalities}", f"data.text.tokenizer={AVDIGITS / 'tokenizer.json'}",
            "data.text.max_length=32", "data.num_classes=10", "data.bad_samples.min_samples=1", *IMAGE]


def csv_dataset(root: Path) -> list[str]:
    """``root/{train,val,test}.tsv`` + ``root/images``; classification overrides."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, rows in _records().items():
        lines = ["filepath\ttitle\tlabel"]
        for row in rows:
            image = Path(row["image"]).name
            shutil.copyfile(AVDIGITS / row["image"], root / "images" / image)
            lines.append(f"images/{image}\t{row['caption']}\t{row['label']}")
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    splits = [f"+data.splits.test={{_target_: polyfuse.data.CsvCaptionsReader, _partial_: true, "
              f"path: {root / 'test.tsv'}, label_key: label}}",
              "+data.splits.train.label_key=label", "+data.splits.val.label_key=label", "data.test_splits=[test]"]
    return ["data=csv_captions", *_common(root), *splits]


def coco_dataset(root: Path) -> list[str]:
    """COCO 2017 layout (annotations/captions_<split>2017.json + <split>2017/); retrieval overrides."""
    for split, rows in _records().items():
        folder = {"train": "train2017", "val": "val2017", "test": "val2017"}[split]
        if split == "test":
            continue  # COCO's test split is val2017, as in configs/data/coco_captions.yaml
        (root / folder).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for number, row in enumerate(rows):
            name = Path(row["image"]).name
            shutil.copyfile(AVDIGITS / row["image"], root / folder / name)
            images.append({"id": number, "file_name": name})
            annotations.append({"id": len(annotations), "image_id": number, "caption": row["caption"]})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"captions_{folder}.json").write_text(
            json.dumps({"images": images, "annotations": annotations}))
    retrieval = ["model/head=contrastive", "model.fusion=null", "~model.encoders.audio",  # monitors val/rsum
                 "optimized_metric=test/rsum"]
    return ["data=coco_captions", *_common(root), *retrieval]


def shard_dataset(root: Path, shards_per_split: int = 4) -> list[str]:
    """WebDataset shards of the CSV data (``root/{train,val,test}/*.tar`` + ``index.json``)."""
    from polyfuse.data import CsvCaptionsReader, write_shards

    csv_root = root / "csv"
    csv_dataset(csv_root)
    for split, count in SIZES.items():
        reader = CsvCaptionsReader(csv_root / f"{split}.tsv", label_key="label")
        (root / split).mkdir(parents=True, exist_ok=True)
        write_shards((reader[index] for index in range(len(reader))), root / split / "shard-%06d.tar",
                     maxcount=-(-count // shards_per_split), modalities=("image", "text"), targets=("label",))
    return ["data=webdataset", *_common(root), "data.splits.train.shuffle_buffer=16"]

"""MultimodalDataModule from the data configs: readers -> decoded batches -> training, bad files counted."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import hydra
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from polyfuse.data import ShardReader, TooManyBadSamplesError, write_shards
from polyfuse.training import MultimodalDataModule


def _image(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path.name


def _tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "dog", "cat", "barks", "meows"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                             special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.save(str(path))
    return path


def _av_root(root: Path, per_split: int = 8) -> Path:
    """``<split>/metadata.jsonl`` with frames, clips and captions; some absent, one corrupt frame in train."""
    for split in ("train", "val", "test"):
        lines = []
        for index in range(per_split):
            record = {"id": f"{split}{index}", "label": index % 2, "text": ["a dog barks", "a cat meows"][index % 2]}
            if index % 4 != 1:  # every 4th sample has no frame
                record["image"] = f"frames/{_image(root / split / 'frames' / f'{index}.png', index)}"
            if index % 3 != 2:  # every 3rd has no audio
                clip = root / split / "audio" / f"{index}.flac"
                clip.parent.mkdir(parents=True, exist_ok=True)
                sf.write(clip, np.random.default_rng(index).standard_normal(4000).astype(np.float32) * 0.1, 8000)
                record["audio"] = f"audio/{clip.name}"
            lines.append(json.dumps(record))
        (root / split / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    (root / "train" / "frames" / "0.png").write_bytes(b"corrupt")
    return root


def _overrides(root: Path, tokenizer: Path, *extra: str) -> list[str]:
    return ["data=av_folder", f"data.root={root}", f"data.text.tokenizer={tokenizer}", "data.image.size=32",
            "data.image.mode=L", "data.image.mean=[0.5]", "data.image.std=[0.5]", "data.audio.max_seconds=0.5",
            "data.num_workers=0", "data.batch_size=4", "data.bad_samples.max_bad_fraction=0.2", *extra]


def test_av_folder_config_gives_batches_with_presence_and_counts_bad_files(compose_train, tmp_path):
    cfg = compose_train(_overrides(_av_root(tmp_path / "av"), _tokenizer(tmp_path / "tok.json")))
    datamodule: MultimodalDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    assert sum(b.num_valid for b in batches) == 7 and sum(b.batch_size for b in batches) == 8  # one placeholder
    batch = next(iter(datamodule.val_dataloader()))
    assert batch.inputs["image"].values.shape == (4, 1, 32, 32)
    assert batch.inputs["image"].present.tolist() == [True, False, True, True]
    assert batch.inputs["audio"].present.tolist() == [True, True, False, True]
    assert batch.inputs["audio"].mask.sum(1).tolist() == [4000, 4000, 0, 4000]
    assert batch.inputs["text"].values[0].tolist() == [2, 4, 5, 7, 3] and batch.targets["label"].tolist() == [0, 1, 0, 1]
    assert datamodule.bad_sample_report()["train"] == [{"epoch": 0, "good": 7, "bad": 1, "index_errors": 0}]


@pytest.mark.slow
def test_default_model_trains_on_the_av_folder(compose_train, tmp_path):
    from polyfuse.cli.train import train

    cfg = compose_train(_overrides(_av_root(tmp_path / "av"), _tokenizer(tmp_path / "tok.json"), "debug=fdr",
                                   "data.num_classes=2", "data.audio.sample_rate=8000"))
    train(cfg)  # one training, validation and test step with absent modalities and a skipped file


def test_too_many_bad_files_stop_the_epoch(compose_train, tmp_path):
    root = _av_root(tmp_path / "av")
    for index in (2, 3):
        (root / "train" / "frames" / f"{index}.png").write_bytes(b"corrupt")
    cfg = compose_train(_overrides(root, _tokenizer(tmp_path / "tok.json")))
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    with pytest.raises(TooManyBadSamplesError, match=r"train: 3 of 8 samples \(37.5%\) are bad.*0.png"):
        list(datamodule.train_dataloader())


def test_shards_get_the_trainer_rank_and_shuffle_only_for_training(compose_train, tmp_path):
    pytest.importorskip("webdataset")
    root = tmp_path / "shards"
    for split in ("train", "val", "test"):
        samples = ({"id": f"{split}{i}", "text": "a dog", "label": i % 2} for i in range(8))
        write_shards(samples, root / split / "shard-%06d.tar", maxcount=2, modalities=["text"], targets=["label"])
    cfg = compose_train(["data=webdataset", f"data.root={root}", f"data.text.tokenizer={_tokenizer(tmp_path / 't.json')}",
                         "data.modalities=[text]", "data.num_workers=0", "data.batch_size=3"])
    datamodule: MultimodalDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.trainer = SimpleNamespace(global_rank=1, world_size=2, current_epoch=0, num_training_batches=float("inf"))
    datamodule.setup("fit")
    train, val = datamodule.reader("train"), datamodule.reader("val")
    assert isinstance(train, ShardReader) and (train.rank, train.world_size, train.shuffle) == (1, 2, True)
    assert (val.rank, val.shuffle, val.targets) == (1, False, ("label",))
    assert sum(b.batch_size for b in datamodule.val_dataloader()) == 4  # rank 1 of 2 reads half


def test_config_mistakes_name_the_key():
    from polyfuse.data import ImagePipeline

    splits = {"train": list, "val": list, "test": list}
    with pytest.raises(ValueError, match=r"unknown modalities \['depth'\]"):
        MultimodalDataModule(splits, modalities=["image", "depth"], image=ImagePipeline())
    with pytest.raises(ValueError, match=r"data.splits has no \['test_dev'\]"):
        MultimodalDataModule(splits, modalities=["image"], image=ImagePipeline(), test_splits=["test_dev"])
    with pytest.raises(ValueError, match=r"includes \['text'\] but data.text"):
        MultimodalDataModule(splits, modalities=["image", "text"], image=ImagePipeline())


def test_labelled_csv_splits_with_different_rows_are_not_a_label_mismatch(tmp_path):
    """Per-row class indices of a CSV reader are not class *names*: splits whose rows differ must not
    be reported as mapping class names to different indices (regression)."""
    from functools import partial

    from polyfuse.data import CsvCaptionsReader, ImagePipeline, TextPipeline

    for split, labels in (("train", [0, 1, 1]), ("val", [1, 0])):
        rows = [f"{_image(tmp_path / 'images' / f'{split}{i}.png', i)},a dog,{label}" for i, label in enumerate(labels)]
        (tmp_path / f"{split}.csv").write_text("filepath,title,label\n" + "\n".join(f"images/{r}" for r in rows) + "\n")
    reader = partial(CsvCaptionsReader, separator=",", label_key="label")
    module = MultimodalDataModule({"train": partial(reader, tmp_path / "train.csv"),
                                   "val": partial(reader, tmp_path / "val.csv")}, modalities=("image", "text"),
                                  image=ImagePipeline(size=32), text=TextPipeline(_tokenizer(tmp_path / "tok.json")),
                                  test_splits=(), num_classes=2, batch_size=2)
    module.setup("fit")
    assert len(module.dataset("train")) == 3 and len(module.dataset("val")) == 2

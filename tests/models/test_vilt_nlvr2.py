"""ViLT on NLVR2 through the polyfuse path: the NLVR2 reader, the experiment config, the Lightning module."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers")

from polyfuse.cli.config import repo_root  # noqa: E402
from polyfuse.data.nlvr2 import NLVR2Reader  # noqa: E402
from polyfuse.models import ViLTForNLVR2  # noqa: E402

TOKENIZER = repo_root() / "data" / "avdigits" / "tokenizer.json"   # the embedded word-level tokenizer (75 words)
VOCAB = 128


def _nlvr2_root(root: Path, per_split: int = 8) -> Path:
    """NLVR2's layout: ``data/<split>.json`` (JSON lines), train images under ``<directory>/``,
    the other splits' flat; one malformed line and one unknown label in train."""
    rng = np.random.default_rng(0)
    for split in ("train", "dev", "test1"):
        lines = []
        for index in range(per_split):
            prefix = f"{split}-{index}-0"
            directory = str(index % 3) if split == "train" else ""
            for side in (0, 1):
                image = root / "images" / split / directory / f"{prefix}-img{side}.png"
                image.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(image)
            record = {"identifier": f"{prefix}-{index % 2}", "sentence": ["the digit is even in the left image",
                                                                          "the right digit is odd"][index % 2],
                      "label": ["False", "True"][index % 2]}
            if directory:
                record["directory"] = directory
            lines.append(json.dumps(record))
        if split == "train":
            lines += ["{not json", json.dumps({"identifier": "train-99-0-0", "sentence": "a dog", "label": "maybe"})]
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / f"{split}.json").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def nlvr2_root(tmp_path_factory) -> Path:
    return _nlvr2_root(tmp_path_factory.mktemp("nlvr2"))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny pre-trained-style HF ``ViltModel`` (one image row in its modality-type table, as ViLT-B/32 MLM)."""
    torch.manual_seed(0)
    config = transformers.ViltConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                     image_size=32, patch_size=16, vocab_size=VOCAB, max_position_embeddings=16)
    path = tmp_path_factory.mktemp("vilt_mlm")
    transformers.ViltModel(config).save_pretrained(path)
    return path


def test_reader_pairs_each_statement_with_its_two_images(nlvr2_root):
    train = NLVR2Reader(nlvr2_root / "data" / "train.json", nlvr2_root / "images" / "train")
    dev = NLVR2Reader(nlvr2_root / "data" / "dev.json", nlvr2_root / "images" / "dev")
    assert len(train) == 8 and len(train.bad_records) == 2       # the malformed line and the unknown label
    assert "line 10" in train.bad_records[1].source and "maybe" in train.bad_records[1].reason
    sample = train[4]
    assert sample["image"].endswith("images/train/1/train-4-0-img0.png")
    assert sample["image_2"].endswith("images/train/1/train-4-0-img1.png")
    assert sample["label"] == 0 and sample["text"] == "the digit is even in the left image"
    assert dev[1]["image"] == str(nlvr2_root / "images" / "dev" / "dev-1-0-img0.png") and dev[1]["label"] == 1
    assert all(Path(s["image"]).is_file() and Path(s["image_2"]).is_file() for s in (*train.records, *dev.records))


def test_pretrained_type_table_gives_image_2_the_image_row(pretrained):
    model = ViLTForNLVR2.from_hf(pretrained, modality_type_vocab_size=3)
    types = model.fusion.project.type_embedding
    torch.testing.assert_close(types["image_2"], types["image"])
    assert model.labels == ["False", "True"] and model.load_report.fresh  # the classifier starts fresh


@pytest.mark.slow
def test_nlvr2_experiment_trains_through_the_lit_module(compose_train, nlvr2_root, pretrained):
    cfg = compose_train(["experiment=vilt_nlvr2", f"model.model.path={pretrained}", f"data.root={nlvr2_root}",
                         f"data.text.tokenizer={TOKENIZER}", "data.text.max_length=16",
                         "data.image.size=32", "data.num_workers=0", "data.batch_size=4",
                         "data.bad_samples.max_bad_fraction=0.5", "data.bad_samples.min_samples=1"])
    datamodule = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.model)
    assert isinstance(module.model, ViLTForNLVR2) and module.monitor == "val/acc"
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch.inputs) == {"image", "image_2", "text"} and batch.targets["label"].shape == (4,)
    before = {name: p.detach().clone() for name, p in module.model.named_parameters()}
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=4, limit_val_batches=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 4
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"]) and "val/acc" in trainer.callback_metrics
    unchanged = [name for name, p in module.model.named_parameters() if torch.equal(p, before[name])]
    assert not [name for name in unchanged if name.startswith(("head.", "fusion.blocks."))], unchanged


def test_vqa_checkpoint_loads_as_nlvr2_with_a_fresh_classifier(tmp_path):
    torch.manual_seed(0)
    config = transformers.ViltConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                     image_size=32, patch_size=16, vocab_size=VOCAB, num_labels=3)
    transformers.ViltForQuestionAnswering(config).save_pretrained(tmp_path)
    model = ViLTForNLVR2.from_hf(tmp_path, modality_type_vocab_size=3)   # HF names both heads "classifier"
    assert model.load_report.fresh and all(key.startswith("head.") for key in model.load_report.fresh)
    assert model.head.classifier[-1].out_features == 2


def test_task_names_build_their_classes():
    from polyfuse.models import ViLT, ViLTForRetrieval, ViLTModel

    small = dict(vocab_size=20, dim=16, depth=1, heads=2, mlp_hidden=32, image_size=16, patch_size=8, in_chans=1)
    assert type(ViLT(task="retrieval", **small)) is ViLTForRetrieval and type(ViLT("model", **small)) is ViLTModel
    assert ViLT.available() == ["model", "nlvr2", "retrieval", "vqa"]
    with pytest.raises(KeyError, match="unknown ViLT task 'vqa2'; available: model, nlvr2, retrieval, vqa"):
        ViLT(task="vqa2", **small)
    with pytest.raises(ValueError, match="ViLTForNLVR2 is the 'nlvr2' task, got task='vqa'"):
        ViLTForNLVR2(task="vqa", **small)

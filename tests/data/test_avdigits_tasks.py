"""AV-digits task views: per-question VQA samples and caption targets (additive to the default)."""

from __future__ import annotations

import pytest
import torch

from polyfuse.data.avdigits import AVDigitsDataset, read_answers
from polyfuse.training.datamodule import AVDigitsDataModule


def test_vqa_task_gives_one_sample_per_question(avdigits_root) -> None:
    default = AVDigitsDataset(avdigits_root, "val", modalities=["text"])
    vqa = AVDigitsDataset(avdigits_root, "val", modalities=["text"], task="vqa")
    assert len(vqa) == 5 * len(default)
    sample = vqa[0]
    record = vqa.records[0]
    assert sample["id"] == f"{record['id']}_q0" and sample["image_id"] == record["id"]
    assert sample["question"] == record["qa"][0]["question"] and len(sample["answers"]) == 10
    assert vqa.tokenizer.decode(sample["text"].tolist()) == sample["question"]
    assert len(sample["answer_ids"]) == len(sample["caption_ids"]) == vqa.max_text_length
    assert vqa.tokenizer.decode(sample["answer_ids"]) == sample["answer"]


def test_captioning_task_adds_padded_caption_ids_only(avdigits_root) -> None:
    default = AVDigitsDataset(avdigits_root, "val", modalities=["image"])
    captioning = AVDigitsDataset(avdigits_root, "val", modalities=["image"], task="captioning")
    assert len(captioning) == len(default)
    sample = captioning[3]
    assert set(sample) - set(default[3]) == {"caption_ids"}
    ids = sample["caption_ids"]
    assert ids[0] == captioning.tokenizer.token_to_id("[CLS]") and captioning.pad_id in ids
    assert captioning.tokenizer.decode(ids) == sample["caption"]


def test_datamodule_collates_task_targets(avdigits_root) -> None:
    data = AVDigitsDataModule(avdigits_root, modalities=["image", "text"], task="vqa", batch_size=4)
    batch = next(iter(data.val_dataloader()))
    assert batch.targets["caption_ids"].shape == (4, 32) and batch.targets["answer_ids"].dtype == torch.int64
    assert len(batch.extras["answers"]) == 4 and len(batch.extras["answers"][0]) == 10


def test_read_answers_and_unknown_task(avdigits_root) -> None:
    answers = read_answers(avdigits_root, "val")
    assert len(answers) == 5 * len(AVDigitsDataset(avdigits_root, "val", modalities=["text"]))
    with pytest.raises(ValueError, match="unknown AV-digits task"):
        AVDigitsDataset(avdigits_root, "val", task="detection")

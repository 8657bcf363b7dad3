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


# --- interaction tasks (polyfuse.data.avdigits_tasks): the claims proved from the metadata alone ---

from collections import Counter  # noqa: E402

from polyfuse.data.avdigits import read_metadata  # noqa: E402
from polyfuse.data.avdigits_tasks import INTERACTION_TASKS, pair_records  # noqa: E402

EVAL_SPLITS = ("train", "val", "test", "test_real")


def split_records(root, split: str) -> list[dict]:
    return [r for r in read_metadata(root) if r["split"] == split]


def by_modality(records: list[dict], pairs: list[tuple[int, int, int]], side: int) -> dict[int, Counter]:
    """digit of the image (side 0) or of the voice (side 1) -> counts of the labels."""
    table: dict[int, Counter] = {}
    for pair in pairs:
        table.setdefault(int(records[pair[side]]["label"]), Counter())[pair[2]] += 1
    return table


def exactly_uniform(counts: Counter, support: set[int]) -> bool:
    return set(counts) == support and len(set(counts.values())) == 1


@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_redundant_task_is_todays_samples(avdigits_root, split) -> None:
    records = split_records(avdigits_root, split)
    pairs = pair_records(records, "redundant")
    assert pairs == [(i, i, int(r["label"])) for i, r in enumerate(records)]


@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_unique_task_each_modality_tells_its_own_part(avdigits_root, split) -> None:
    records = split_records(avdigits_root, split)
    pairs = pair_records(records, "unique")
    for a, counts in by_modality(records, pairs, 0).items():
        assert exactly_uniform(counts, {2 * a, 2 * a + 1})      # written digit known, spoken parity a coin
    for b, counts in by_modality(records, pairs, 1).items():
        assert exactly_uniform(counts, {2 * a + b % 2 for a in range(10)})  # parity known, digit uniform
    assert len(by_modality(records, pairs, 0)) == len(by_modality(records, pairs, 1)) == 10


@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_synergy_task_label_is_uniform_given_either_digit(avdigits_root, split) -> None:
    records = split_records(avdigits_root, split)
    pairs = pair_records(records, "synergy")
    for side in (0, 1):
        table = by_modality(records, pairs, side)
        assert len(table) == 10 and all(exactly_uniform(c, set(range(10))) for c in table.values())
    assert all(label == (int(records[i]["label"]) + int(records[j]["label"])) % 10 for i, j, label in pairs)


@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_mixed_task_has_a_redundant_two_unique_and_a_synergistic_bit(avdigits_root, split) -> None:
    records = split_records(avdigits_root, split)
    pairs = pair_records(records, "mixed")
    digit = lambda index: int(records[index]["label"])  # noqa: E731
    assert all(digit(i) % 2 == digit(j) % 2 for i, j, _ in pairs)           # the shared parity
    assert all(label // 8 == digit(i) % 2 for i, _, label in pairs)         # redundant bit: either tells it
    for a, counts in by_modality(records, pairs, 0).items():                # image: parity and a >= 5 known,
        known = 8 * (a % 2) + 4 * (a >= 5)                                  # b >= 5 and the XOR bit coins
        assert exactly_uniform(counts, {known + 2 * w + s for w in (0, 1) for s in (0, 1)})
    for b, counts in by_modality(records, pairs, 1).items():
        known = 8 * (b % 2) + 2 * (b >= 5)
        assert exactly_uniform(counts, {known + 4 * u + s for u in (0, 1) for s in (0, 1)})
    assert len(by_modality(records, pairs, 0)) == 10


@pytest.mark.parametrize("task", [t for t in INTERACTION_TASKS if t != "redundant"])
def test_pairs_are_seeded_and_stay_inside_their_split(avdigits_root, task) -> None:
    records = {split: split_records(avdigits_root, split) for split in ("train", "test")}
    pairs = {split: pair_records(records[split], task, seed=3) for split in records}
    assert pair_records(records["train"], task, seed=3) == pairs["train"]
    assert pair_records(records["train"], task, seed=4) != pairs["train"]
    for key, side in (("image", 0), ("audio", 1)):
        files = {split: {records[split][p[side]][key] for p in pairs[split]} for split in records}
        assert not files["train"] & files["test"]
    assert abs(len(pairs["train"]) - len(records["train"])) <= len(records["train"]) // 4


def test_dataset_serves_pairs_and_refuses_text(avdigits_root) -> None:
    data = AVDigitsDataModule(avdigits_root, modalities=["image", "audio"], task="unique", num_classes=20,
                              batch_size=8, augment=False)
    dataset = data.dataset("val")
    sample = dataset[5]
    assert sample["label"] == 2 * sample["image_digit"] + sample["audio_digit"] % 2
    assert sample["image"].shape == (1, 32, 32) and sample["audio"].ndim == 1 and "text" not in sample
    batch = next(iter(data.val_dataloader()))
    assert batch.targets["label"].shape == (8,) and int(batch.targets["label"].max()) < 20
    with pytest.raises(ValueError, match="no text modality"):
        AVDigitsDataset(avdigits_root, "val", modalities=["image", "text"], task="synergy")
    with pytest.raises(ValueError, match="has 16 classes"):
        AVDigitsDataModule(avdigits_root, modalities=["image", "audio"], task="mixed").dataset("val")

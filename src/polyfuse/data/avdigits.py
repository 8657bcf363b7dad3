"""AV-digits: the embedded tri-modal dataset (handwritten digit image, spoken digit, text).

Files under ``root`` (built by ``scripts/build_avdigits.py``, see docs/datasets/avdigits.md):
``metadata.jsonl`` (one JSON record per sample), ``images/*.png``, ``audio/*.flac``,
``audio_real/*.flac``, ``tokenizer.json`` (HF tokenizers, word level) and ``info.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from polyfuse.data.avdigits_tasks import INTERACTION_TASKS, get_task, pair_records
from polyfuse.data.io import DataFileError, iter_json_lines, load_audio, load_image

SPLITS = ("train", "val", "test", "test_real")
MODALITIES = ("image", "audio", "text")
TEXT_FIELDS = ("hint", "caption")
TASKS = ("classification", "captioning", "vqa", *INTERACTION_TASKS)


def read_metadata(root: Path) -> list[dict[str, Any]]:
    """Parse ``metadata.jsonl``; a malformed line raises an error naming the file and line."""
    path = root / "metadata.jsonl"
    if not path.is_file():
        raise DataFileError(f"AV-digits metadata not found: {path} (rebuild with `make data`)")
    records = []
    for number, record, problem in iter_json_lines(path):
        if record is None:
            raise DataFileError(f"{path}, line {number}: {problem}")
        for key in ("id", "split", "label", "image", "audio", "hint", "caption"):
            if key not in record:
                raise DataFileError(f"{path}, line {number}: record has no {key!r} field")
        records.append(record)
    return records


def read_answers(root: str | Path, split: str = "train") -> list[list[str]]:
    """The human answers of every question of ``split`` (to build a VQA answer vocabulary)."""
    return [list(qa["answers"]) for r in read_metadata(Path(root)) if r["split"] == split for qa in r.get("qa", [])]


def load_tokenizer(path: str | Path):
    """Load a HF ``tokenizers`` JSON file."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"tokenizer file not found: {path}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises plain Exception subclasses
        raise DataFileError(f"cannot read tokenizer file {path}: {error}") from error


def image_transform(train: bool, augment: bool = True) -> v2.Transform:
    """uint8 ``(1, 32, 32)`` -> float normalised to [-1, 1]; small affine jitter when training."""
    steps: list[v2.Transform] = []
    if train and augment:
        steps.append(v2.RandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.1)))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])]
    return v2.Compose(steps)


class AVDigitsDataset(Dataset):
    """One split of AV-digits as samples ``{"id", "label", "image", "audio", "text", ...}``.

    ``task`` chooses the sample unit and the extra targets:

    * ``"classification"``: one sample per record; ``text`` from ``text_field``.
    * ``"captioning"``: the same, plus ``caption_ids``: the tokenized caption (``[CLS] ... [SEP]``,
      right-padded with [PAD] to ``max_text_length`` so batches stack).
    * ``"vqa"``: one sample per question (5 per record, id ``<id>_q<k>``); ``text`` is the question,
      the 10 human ``answers``, the ``answer`` and the ``question`` travel as strings, and
      ``answer_ids`` (the tokenized answer) and ``caption_ids`` as padded targets, so one batch
      serves VQA, generative VQA, captioning and retrieval over captions (multi-task).
    * ``"redundant"``, ``"unique"``, ``"synergy"``, ``"mixed"``: interaction tasks, one sample per
      (written digit, spoken digit) pair of the split (:mod:`polyfuse.data.avdigits_tasks`), with
      ``image_digit`` / ``audio_digit`` beside the task's ``label``; no text except for ``redundant``.

    Args:
        root: dataset directory. split: ``train``, ``val``, ``test`` or ``test_real`` (test images
            paired with a real human voice).
        modalities: which of ``image``, ``audio``, ``text`` to return; the others are omitted.
        text_field: ``"hint"`` (partial clue, used for classification) or ``"caption"``.
        max_audio_seconds: longer clips are cut. max_text_length: tokens, including [CLS]/[SEP].
        missing: per-modality probability that a sample's modality is absent (returned as
            ``None``), drawn once per sample from ``missing_seed`` so it is the same every epoch.
        augment: random affine jitter on training images.
        task: one of :data:`TASKS` (see above). pairing_seed: seed of an interaction task's pairs.
    """

    def __init__(self, root: str | Path, split: str = "train", modalities: Sequence[str] = MODALITIES,
                 text_field: str = "hint", max_audio_seconds: float = 1.5, max_text_length: int = 32,
                 missing: dict[str, float] | None = None, missing_seed: int = 0, augment: bool = True,
                 task: str = "classification", pairing_seed: int = 0) -> None:
        self.root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"unknown AV-digits split {split!r}; valid: {', '.join(SPLITS)}")
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown AV-digits modalities {unknown}; valid: {', '.join(MODALITIES)}")
        if text_field not in TEXT_FIELDS:
            raise ValueError(f"unknown text_field {text_field!r}; valid: {', '.join(TEXT_FIELDS)}")
        if task not in TASKS:
            raise ValueError(f"unknown AV-digits task {task!r}; valid: {', '.join(TASKS)}")
        self.task = task
        info_path = self.root / "info.json"
        if not info_path.is_file():
            raise DataFileError(f"AV-digits info file not found: {info_path} (is data.root right?)")
        self.info = json.loads(info_path.read_text())
        self.split, self.modalities, self.text_field = split, tuple(modalities), text_field
        self.sample_rate = int(self.info["sample_rate"])
        self.max_audio_samples = int(max_audio_seconds * self.sample_rate)
        self.max_text_length = max_text_length
        self.records = [r for r in read_metadata(self.root) if r["split"] == split]
        if not self.records:
            raise DataFileError(f"{self.root / 'metadata.jsonl'} has no sample in split {split!r}")
        # (record index, question index): one sample per record, or per question for VQA
        self.items = [(i, q) for i, r in enumerate(self.records) for q in range(len(r.get("qa", [])))] \
            if task == "vqa" else [(i, -1) for i in range(len(self.records))]
        if not self.items:
            raise DataFileError(f"{self.root / 'metadata.jsonl'} has no question in split {split!r}")
        self.pairs: list[tuple[int, int, int]] | None = None
        if task in INTERACTION_TASKS:
            if "text" in self.modalities and not get_task(task).text:
                raise ValueError(f"AV-digits task {task!r} pairs a written and a spoken digit of different "
                                 "records, so it has no text modality; use data.modalities=[image, audio]")
            self.pairs = pair_records(self.records, task, pairing_seed)
        self.tokenizer = load_tokenizer(self.root / "tokenizer.json")
        self.pad_id = self.tokenizer.token_to_id("[PAD]")
        self.transform = image_transform(train=split == "train", augment=augment)
        rng = np.random.default_rng(missing_seed)
        draws = rng.random((len(self.records), len(MODALITIES)))
        self.absent = {m: set(np.nonzero(draws[:, MODALITIES.index(m)] < (missing or {}).get(m, 0.0))[0].tolist())
                       for m in self.modalities}
        self._images: dict[str, Tensor] = {}
        self._audio: dict[str, Tensor] = {}
        self._text: dict[int, Tensor] = {}
        self._text_cache: dict[str, Tensor] = {}
        self._preload()

    @property
    def num_classes(self) -> int:
        return get_task(self.task).num_classes if self.task in INTERACTION_TASKS else int(self.info["num_classes"])

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def _preload(self) -> None:
        """Decode every file of the split once (the whole dataset is a few MB)."""
        for index, record in enumerate(self.records):
            if "image" in self.modalities and record["image"] not in self._images:
                self._images[record["image"]] = load_image(self.root / record["image"])
            if "audio" in self.modalities and record["audio"] not in self._audio:
                self._audio[record["audio"]] = load_audio(self.root / record["audio"], self.sample_rate)
            if "text" in self.modalities and self.task != "vqa":
                self._text[index] = self.tokenize(record[self.text_field])

    def tokenize(self, text: str) -> Tensor:
        ids = self.tokenizer.encode(text).ids
        if len(ids) > self.max_text_length:  # keep [CLS] ... and the final [SEP]
            ids = ids[: self.max_text_length - 1] + ids[-1:]
        return torch.tensor(ids, dtype=torch.long)

    def _question_ids(self, question: str) -> Tensor:
        if question not in self._text_cache:
            self._text_cache[question] = self.tokenize(question)
        return self._text_cache[question]

    def padded_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` right-padded with [PAD] to ``max_text_length`` (a stackable target)."""
        ids = self.tokenize(text).tolist()
        return ids + [self.pad_id] * (self.max_text_length - len(ids))

    def __len__(self) -> int:
        return len(self.items) if self.pairs is None else len(self.pairs)

    def _pair_sample(self, item: int) -> dict[str, Any]:
        """An interaction-task sample: the image of one record, the voice of another."""
        image_index, audio_index, label = self.pairs[item]  # type: ignore[index]
        shown, spoken = self.records[image_index], self.records[audio_index]
        sample: dict[str, Any] = {"id": f"{shown['id']}+{spoken['id']}", "label": label,
                                  "image_digit": int(shown["label"]), "audio_digit": int(spoken["label"])}
        if "image" in self.modalities:
            sample["image"] = None if image_index in self.absent["image"] else self.transform(self._images[shown["image"]])
        if "audio" in self.modalities:
            sample["audio"] = None if audio_index in self.absent["audio"] \
                else self._audio[spoken["audio"]][: self.max_audio_samples]
        if "text" in self.modalities:
            sample["text"] = None if image_index in self.absent["text"] else self._text.get(image_index)
        return sample

    def __getitem__(self, item: int) -> dict[str, Any]:
        if self.pairs is not None:
            return self._pair_sample(item)
        index, question = self.items[item]
        record = self.records[index]
        sample: dict[str, Any] = {"id": record["id"], "label": int(record["label"]),
                                  "caption": record["caption"], "hint": record["hint"]}
        if self.task in ("captioning", "vqa"):
            sample["caption_ids"] = self.padded_ids(record["caption"])
        if self.task == "vqa":
            qa = record["qa"][question]
            sample.update(id=f"{record['id']}_q{question}", image_id=record["id"], question=qa["question"],
                          answer=qa["answer"], answers=list(qa["answers"]), answer_ids=self.padded_ids(qa["answer"]))
        if "image" in self.modalities:
            sample["image"] = None if index in self.absent["image"] else self.transform(self._images[record["image"]])
        if "audio" in self.modalities:
            sample["audio"] = None if index in self.absent["audio"] else self._audio[record["audio"]][: self.max_audio_samples]
        if "text" in self.modalities:
            text = self._question_ids(sample["question"]) if self.task == "vqa" else self._text.get(index)
            sample["text"] = None if index in self.absent["text"] else text
        return sample

"""Instruction data for :class:`~polyfuse.models.MultimodalLM`: LLaVA conversation JSON, and AV-digits as conversations.

LLaVA's format (Liu et al., "Visual Instruction Tuning", 2023; e.g. ``llava_instruct_150k.json``,
``blip_laion_cc_sbu_558k.json``) is a JSON list of records::

    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                       {"from": "gpt", "value": "The bus is white and red."}, ...]}

Readers yield raw samples (:mod:`polyfuse.data.reader`) ``{"id", "image": path | None, "audio":
path | None, "conversations": [...]}``; the conversations travel untouched to
``batch.extras["conversations"]``, where the model formats and tokenises them
(:mod:`polyfuse.models.chat`). A record without an image is text-only (``present=False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from polyfuse.data.io import DataFileError
from polyfuse.data.reader import SOURCE_KEY, RecordReader, read_json

__all__ = ["LlavaConversationReader", "AVDigitsInstructionReader", "check_conversation"]

PLACEHOLDERS = {"image": "<image>", "audio": "<audio>"}
WRITTEN_QUESTION = "what digit is shown ?"
SPOKEN_QUESTION = "what digit is spoken ?"
QUESTION_TYPES = ("written", "spoken", "both")  # about the image, the audio, both (the record's qa)


def check_conversation(conversation: Any) -> str | None:
    """``None`` for a usable conversation, else why not (a non-empty list of turns with text, one answer)."""
    if not isinstance(conversation, list) or not conversation:
        return "'conversations' must be a non-empty list of turns"
    for index, turn in enumerate(conversation):
        if not isinstance(turn, dict) or not isinstance(turn.get("value", turn.get("content")), str):
            return f"turn {index} needs a 'from' and a text 'value'"
    if not any(str(t.get("from", t.get("role", ""))).lower() in ("gpt", "assistant") for t in conversation):
        return "no answer turn ('from': 'gpt')"
    return None


def place(conversation: list[dict[str, Any]], modality: str) -> list[dict[str, Any]]:
    """LLaVA's convention: a sample with a modality whose text lacks its placeholder gets it at the
    start of the first human turn (``"<image>\\n" + text``)."""
    token = PLACEHOLDERS[modality]
    if any(token in str(t.get("value", "")) for t in conversation):
        return conversation
    out = [dict(t) for t in conversation]
    first = next((t for t in out if str(t.get("from", "")).lower() in ("human", "user")), out[0])
    first["value"] = f"{token}\n{first['value']}"
    return out


class LlavaConversationReader(RecordReader):
    """LLaVA conversation JSON: one sample per record, files resolved under ``image_root`` / ``audio_root``.

    Args:
        annotations: the JSON list of records. image_root: folder the ``image`` paths are relative to.
        audio_root: the same for an ``audio`` field (default ``image_root``).
        limit: read only the first ``limit`` records (quick runs).

    Records without ``conversations`` (or with no answer turn) are skipped and counted as bad.
    """

    modalities = ("image", "audio")

    def __init__(self, annotations: str | Path, image_root: str | Path = ".", audio_root: str | Path | None = None,
                 limit: int | None = None) -> None:
        super().__init__()
        self.path = Path(annotations).expanduser()
        data = read_json(self.path, "a LLaVA conversation file (a JSON list of records)")
        if not isinstance(data, list):
            raise DataFileError(f"{self.path}: expected a JSON list of records, got {type(data).__name__}")
        roots = {"image": Path(image_root).expanduser(), "audio": Path(audio_root or image_root).expanduser()}
        for number, record in enumerate(data[:limit] if limit else data):
            where = f"{self.path} (record {number})"
            sample_id = record.get("id", number) if isinstance(record, dict) else number
            problem = "record must be a JSON object" if not isinstance(record, dict) else \
                check_conversation(record.get("conversations"))
            if problem:
                self.skip(where, problem, sample_id)
                continue
            sample: dict[str, Any] = {"id": str(sample_id), "conversations": record["conversations"],
                                      SOURCE_KEY: where}
            for modality in self.modalities:
                value = record.get(modality)
                sample[modality] = str(roots[modality] / value) if value else None
                if value:
                    sample["conversations"] = place(sample["conversations"], modality)
            self.records.append(sample)


class AVDigitsInstructionReader(RecordReader):
    """AV-digits as instruction data: one multi-turn conversation per record of ``split``.

    Turns, in order: the written digit (``<image>`` + "what digit is shown ?" -> its name), the
    spoken digit (``<audio>`` + "what digit is spoken ?" -> its name), then the record's ``qa``
    questions about the digit (parity, comparisons, arithmetic, stroke thickness), answered from
    both modalities. Each answer turn carries its question type (``"type"``: ``written``, ``spoken`` or
    ``both``; the model's ``question_types`` metrics). With ``turns="single"`` each of those is its own sample (ids ``<id>_written``,
    ``<id>_spoken``, ``<id>_q<k>``) holding only the modalities it asks about (the ``qa`` ones both).

    Args:
        root: the AV-digits folder (``metadata.jsonl``). split: ``train``, ``val``, ``test``, ``test_real``.
        turns: ``"multi"`` or ``"single"``. max_questions: ``qa`` questions used per record.
        missing: per-modality probability that a record lacks it (``{"audio": 0.5}``), drawn once from
            ``missing_seed``; a missing modality's own question is left out, its placeholders stay and
            the model splices nothing there.
    """

    modalities = ("image", "audio")

    def __init__(self, root: str | Path, split: str = "train", turns: str = "multi", max_questions: int = 5,
                 missing: Mapping[str, float] | None = None, missing_seed: int = 0) -> None:
        super().__init__()
        from polyfuse.data.avdigits import SPLITS, read_metadata

        if split not in SPLITS:
            raise ValueError(f"unknown AV-digits split {split!r}; valid: {', '.join(SPLITS)}")
        if turns not in ("multi", "single"):
            raise ValueError(f"AV-digits instruction turns must be 'multi' or 'single', got {turns!r}")
        self.root = Path(root).expanduser()
        classes = read_json(self.root / "info.json", "the AV-digits info file")["classes"]
        records = [r for r in read_metadata(self.root) if r["split"] == split]
        draws = np.random.default_rng(missing_seed).random((len(records), len(self.modalities)))
        for index, record in enumerate(records):
            absent = {m for k, m in enumerate(self.modalities) if draws[index, k] < (missing or {}).get(m, 0.0)}
            files = {"image": None if "image" in absent else str(self.root / record["image"]),
                     "audio": None if "audio" in absent else str(self.root / record["audio"])}
            name = classes[int(record["label"])]
            pairs: list[tuple[str, str, str]] = []  # (suffix, question, answer)
            if "image" not in absent:
                pairs.append(("written", f"<image>\n{WRITTEN_QUESTION}", name))
            if "audio" not in absent:
                pairs.append(("spoken", f"<audio>\n{SPOKEN_QUESTION}", name))
            for k, qa in enumerate(record.get("qa", [])[:max_questions]):
                pairs.append((f"q{k}", qa["question"], qa["answer"]))
            if not pairs:
                self.skip(self.root / "metadata.jsonl", "no modality and no question left", record["id"])
            elif turns == "single":
                for suffix, question, answer in pairs:
                    used = {"written": ("image",), "spoken": ("audio",)}.get(suffix, self.modalities)
                    if suffix not in ("written", "spoken"):
                        question = "<image>\n<audio>\n" + question
                    own = {m: files[m] if m in used else None for m in self.modalities}
                    self._add(f"{record['id']}_{suffix}", own, [(suffix, question, answer)], record["label"])
            else:
                placed = "".join(f"{PLACEHOLDERS[m]}\n" for m in self.modalities if m in absent)
                first = [(pairs[0][0], placed + pairs[0][1], pairs[0][2])] + pairs[1:]
                self._add(str(record["id"]), files, first, record["label"])

    def _add(self, sample_id: str, files: dict[str, str | None], pairs: Sequence[tuple[str, str, str]],
             label: int) -> None:
        conversation = []
        for suffix, question, answer in pairs:
            kind = suffix if suffix in QUESTION_TYPES else "both"
            conversation += [{"from": "human", "value": question}, {"from": "gpt", "value": answer, "type": kind}]
        self.records.append({"id": sample_id, **files, "conversations": conversation, "label": int(label),
                             SOURCE_KEY: f"{self.root / 'metadata.jsonl'} (id {sample_id})"})

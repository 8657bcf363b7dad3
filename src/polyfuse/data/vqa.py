"""VQAv2 (Goyal et al., 2017): questions + annotations JSON over COCO images.

Files (https://visualqa.org/download.html): ``v2_OpenEnded_mscoco_{train,val}2014_questions.json``
and ``v2_mscoco_{train,val}2014_annotations.json``; test / test-dev have questions only.
Questions: ``{"data_subtype": "val2014", "questions": [{image_id, question, question_id}]}``.
Annotations: ``{"annotations": [{question_id, image_id, multiple_choice_answer, answer_type,
question_type, answers: [{answer, answer_confidence, answer_id}] x 10}]}``.

Targets (only with annotations and an answer vocabulary):

* ``answer_scores: float32 (A,)`` -- the official accuracy of each vocabulary answer against the
  ten human answers, averaged over the ten leave-one-out subsets of nine:
  ``score(c) = (c * min(1, (c - 1) / 3) + (10 - c) * min(1, c / 3)) / 10`` for an answer given
  ``c`` times (0.3, 0.6, 0.9, 1.0 for 1, 2, 3, >= 4), the soft target of BCE-trained VQA heads.
* ``label: int`` -- vocabulary index of ``multiple_choice_answer``, ``-100`` (cross-entropy's
  ignore index) when it is outside the vocabulary.

The ten raw answers travel as the extra ``answers`` for the official metric.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import torch

from polyfuse.data.io import DataFileError
from polyfuse.data.reader import SOURCE_KEY, RecordReader, read_json, require_keys

IGNORE_INDEX = -100
NUM_HUMAN_ANSWERS = 10


def vqa_score(count: int, total: int = NUM_HUMAN_ANSWERS) -> float:
    """Official VQA accuracy of an answer that ``count`` of ``total`` annotators gave."""
    if count <= 0:
        return 0.0
    return (count * min(1.0, (count - 1) / 3) + (total - count) * min(1.0, count / 3)) / total


@lru_cache(maxsize=4)
def load_answer_vocab(path: str, top_k: int = 3129) -> tuple[str, ...]:
    """The answer vocabulary from ``path``: a JSON list of answers, or a VQAv2 annotations file
    from which the ``top_k`` most frequent ``multiple_choice_answer`` strings are taken
    (ties broken alphabetically, so every process builds the same list)."""
    data = read_json(path, "an answer vocabulary (JSON list) or VQAv2 annotations file")
    if isinstance(data, list):
        if not all(isinstance(answer, str) for answer in data):
            raise DataFileError(f"{path}: answer vocabulary must be a JSON list of strings")
        return tuple(data)
    require_keys(data, ("annotations",), path, "a VQAv2 annotations file")
    counts = Counter(a["multiple_choice_answer"] for a in data["annotations"] if "multiple_choice_answer" in a)
    return tuple(answer for answer, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_k])


def default_image_pattern(subtype: str) -> str:
    """COCO file naming for a VQA ``data_subtype`` (test-dev images live in ``test2015``)."""
    folder = "test2015" if subtype.startswith("test") else subtype
    return f"{folder}/COCO_{folder}_{{image_id:012d}}.jpg"


class VQAv2Reader(RecordReader):
    """One sample per question: ``{"id": question_id, "image": path, "text": question, ...}``.

    Args:
        questions: the questions JSON. image_root: folder holding ``train2014/``, ``val2014/``,
            ``test2015/``. annotations: the annotations JSON (``None`` for test / test-dev).
        answer_vocab: JSON list of answers, or an annotations file to take the ``top_k`` most
            frequent answers from (use the *training* annotations for every split); without it
            there are no targets.
        image_pattern: file of an image relative to ``image_root``, formatted with ``image_id``
            (default from ``data_subtype``: ``val2014/COCO_val2014_{image_id:012d}.jpg``).
    """

    modalities = ("image", "text")

    def __init__(self, questions: str | Path, image_root: str | Path, annotations: str | Path | None = None,
                 answer_vocab: str | Path | None = None, top_k: int = 3129, image_pattern: str | None = None) -> None:
        super().__init__()
        self.questions_path = Path(questions).expanduser()
        data = read_json(self.questions_path, "a VQAv2 questions file")
        require_keys(data, ("questions",), self.questions_path, "a VQAv2 questions file")
        self.subtype = str(data.get("data_subtype", ""))
        if image_pattern is None and not self.subtype:
            raise DataFileError(f"{self.questions_path} has no 'data_subtype'; set image_pattern")
        self.image_pattern = image_pattern or default_image_pattern(self.subtype)
        self.image_root = Path(image_root).expanduser()
        self.answers: dict[int, dict[str, Any]] = {}
        if annotations is not None:
            self._read_annotations(Path(annotations).expanduser())
        self.vocab: tuple[str, ...] = ()
        if answer_vocab is not None and annotations is not None:
            self.vocab = load_answer_vocab(str(Path(answer_vocab).expanduser()), top_k)
        self.vocab_index = {answer: index for index, answer in enumerate(self.vocab)}
        self.targets = ("label", "answer_scores") if self.vocab else ()
        self.question_ids: list[int] = []
        self.image_ids: list[int] = []
        self.texts: list[str] = []
        for number, question in enumerate(data["questions"]):
            where = f"{self.questions_path} (questions[{number}])"
            if not all(key in question for key in ("question_id", "image_id", "question")):
                self.skip(where, "question entry needs question_id, image_id and question")
                continue
            if annotations is not None and question["question_id"] not in self.answers:
                self.skip(where, f"no annotation for question {question['question_id']}", question["question_id"])
                continue
            self.question_ids.append(int(question["question_id"]))
            self.image_ids.append(int(question["image_id"]))
            self.texts.append(question["question"])

    def _read_annotations(self, path: Path) -> None:
        data = read_json(path, "a VQAv2 annotations file")
        require_keys(data, ("annotations",), path, "a VQAv2 annotations file")
        for number, annotation in enumerate(data["annotations"]):
            answers = annotation.get("answers")
            if "question_id" not in annotation or not isinstance(answers, list) or not answers:
                self.skip(f"{path} (annotations[{number}])", "annotation needs question_id and a list of answers")
                continue
            self.answers[annotation["question_id"]] = {
                "answers": [str(a.get("answer", "")) for a in answers],
                "multiple_choice_answer": annotation.get("multiple_choice_answer"),
                "answer_type": annotation.get("answer_type"),
            }

    @property
    def num_answers(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.question_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        question_id, image_id, text = self.question_ids[index], self.image_ids[index], self.texts[index]
        sample: dict[str, Any] = {
            "id": str(question_id), "image": str(self.image_root / self.image_pattern.format(image_id=image_id)),
            "text": text, "question": text, "question_id": question_id, "image_id": image_id,
            SOURCE_KEY: f"{self.questions_path} (question {question_id})"}
        annotation = self.answers.get(question_id)
        if annotation is not None:
            sample["answers"] = annotation["answers"]
            sample["answer_type"] = annotation["answer_type"]
            sample["multiple_choice_answer"] = annotation["multiple_choice_answer"]
        if self.vocab and annotation is not None:
            sample["label"] = self.vocab_index.get(annotation["multiple_choice_answer"], IGNORE_INDEX)
            sample["answer_scores"] = self.answer_scores(annotation["answers"])
        return sample

    def answer_scores(self, answers: Sequence[str]) -> torch.Tensor:
        """``float32 (A,)`` official accuracy of every vocabulary answer (0 for the others)."""
        scores = torch.zeros(len(self.vocab), dtype=torch.float32)
        for answer, count in Counter(answers).items():
            if answer in self.vocab_index:
                scores[self.vocab_index[answer]] = vqa_score(count, len(answers))
        return scores

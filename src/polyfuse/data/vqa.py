"""VQAv2 (Goyal et al., 2017): questions + annotations JSON over COCO images.

Files (https://visualqa.org/download.html): ``v2_OpenEnded_mscoco_{train,val}2014_questions.json``
and ``v2_mscoco_{train,val}2014_annotations.json``; test / test-dev have questions only.
Questions: ``{"data_subtype": "val2014", "questions": [{image_id, question, question_id}]}``.
Annotations: ``{"annotations": [{question_id, image_id, multiple_choice_answer, answer_type,
question_type, answers: [{answer, answer_confidence, answer_id}] x 10}]}``.

Each sample carries the ten human answers as the extra ``answers`` (plus ``multiple_choice_answer``,
``answer_type``, ``question_id``, ``image_id``); the VQA head (:class:`polyfuse.heads.VQAHead`)
builds its answer vocabulary with :func:`read_answers` and turns the answers into soft scores, so
the reader has no targets and test / test-dev questions (no annotations) batch the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyfuse.data.io import DataFileError
from polyfuse.data.reader import SOURCE_KEY, RecordReader, read_json, require_keys


def read_answers(root: str | Path, split: str = "train2014") -> list[list[str]]:
    """The human answers of every question of ``split``, for ``AnswerVocabulary.from_answers``
    (build the vocabulary from the training split for every split).

    ``root`` is the folder holding ``v2_mscoco_<split>_annotations.json``, or that file itself.
    """
    path = Path(root).expanduser()
    if path.is_dir():
        path = path / f"v2_mscoco_{split}_annotations.json"
    data = read_json(path, "a VQAv2 annotations file")
    require_keys(data, ("annotations",), path, "a VQAv2 annotations file")
    return [[str(a.get("answer", "")) for a in item.get("answers", [])] for item in data["annotations"]]


def default_image_pattern(subtype: str) -> str:
    """COCO file naming for a VQA ``data_subtype`` (test-dev images live in ``test2015``)."""
    folder = "test2015" if subtype.startswith("test") else subtype
    return f"{folder}/COCO_{folder}_{{image_id:012d}}.jpg"


class VQAv2Reader(RecordReader):
    """One sample per question: ``{"id": question_id, "image": path, "text": question, ...}``.

    Args:
        questions: the questions JSON. image_root: folder holding ``train2014/``, ``val2014/``,
            ``test2015/``. annotations: the annotations JSON (``None`` for test / test-dev).
        image_pattern: file of an image relative to ``image_root``, formatted with ``image_id``
            (default from ``data_subtype``: ``val2014/COCO_val2014_{image_id:012d}.jpg``).
    """

    modalities = ("image", "text")

    def __init__(self, questions: str | Path, image_root: str | Path, annotations: str | Path | None = None,
                 image_pattern: str | None = None) -> None:
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
        return sample

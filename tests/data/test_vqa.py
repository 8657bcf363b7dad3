"""VQAv2 reader: questions + annotations JSON (10 answers each), answer vocabulary, test-dev."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyfuse.data import DataFileError, MultimodalCollate, VQAv2Reader
from polyfuse.data.vqa import read_answers

from .media import decode_all, write_image, write_json

ANSWERS = {  # question id -> the 10 human answers
    1001: ["yes"] * 10,
    1002: ["2"] * 3 + ["two"] * 2 + ["3"] * 5,
    1003: ["red"] + ["blue"] * 9,
}


def _answers(words):
    return [{"answer": w, "answer_confidence": "yes", "answer_id": i + 1} for i, w in enumerate(words)]


def _vqa(tmp_path: Path, subtype: str = "val2014", with_annotations: bool = True) -> tuple[Path, Path | None]:
    folder = "test2015" if subtype.startswith("test") else subtype
    for image_id in (42, 73):
        write_image(tmp_path / folder / f"COCO_{folder}_{image_id:012d}.jpg", seed=image_id)
    questions = write_json(tmp_path / f"v2_OpenEnded_mscoco_{subtype}_questions.json", {
        "info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}, "data_subtype": subtype,
        "questions": [{"image_id": 42, "question": "Is the dog on the bench?", "question_id": 1001},
                      {"image_id": 42, "question": "How many cats?", "question_id": 1002},
                      {"image_id": 73, "question": "What color is the car?", "question_id": 1003},
                      {"image_id": 73, "question_id": 1004}]})
    if not with_annotations:
        return questions, None
    annotations = write_json(tmp_path / f"v2_mscoco_{subtype}_annotations.json", {
        "info": {}, "license": {}, "data_subtype": subtype, "data_type": "mscoco",
        "annotations": [{"question_type": "is the", "multiple_choice_answer": max(set(a), key=a.count),
                         "answers": _answers(a), "image_id": 42 if q < 1003 else 73, "answer_type": "other",
                         "question_id": q} for q, a in ANSWERS.items()]})
    return questions, annotations


def test_vqa_reader_samples_carry_the_ten_answers(tmp_path, pipelines):
    questions, annotations = _vqa(tmp_path)
    reader = VQAv2Reader(questions, tmp_path, annotations)
    assert len(reader) == 3 and "question_id, image_id and question" in reader.bad_records[0].reason
    assert reader.targets == () and reader.modalities == ("image", "text")
    sample = reader[1]
    assert sample["image"] == str(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    assert sample["answers"] == ANSWERS[1002] and sample["multiple_choice_answer"] == "3"
    assert sample["question"] == "How many cats?" and sample["question_id"] == 1002 and sample["image_id"] == 42
    batch = MultimodalCollate(["image", "text"], targets=reader.targets)(decode_all(reader, pipelines))
    assert batch.extras["answers"] == list(ANSWERS.values()) and batch.ids == ["1001", "1002", "1003"]
    assert read_answers(annotations) == read_answers(tmp_path, split="val2014") == list(ANSWERS.values())


def test_test_dev_without_annotations(tmp_path, pipelines):
    questions, _ = _vqa(tmp_path, subtype="test-dev2015", with_annotations=False)
    reader = VQAv2Reader(questions, tmp_path)
    assert reader.targets == () and len(reader) == 3
    assert reader[0]["image"].endswith("test2015/COCO_test2015_000000000042.jpg") and "answers" not in reader[0]
    batch = MultimodalCollate(["image", "text"], targets=reader.targets)(decode_all(reader, pipelines))
    assert batch.inputs["image"].values.shape == (3, 3, 16, 16) and batch.targets == {}
    assert batch.inputs["text"].mask.sum(1).tolist() == [9, 6, 8]  # [CLS] words ? [SEP]


def test_question_without_annotation_is_counted_and_bad_files_are_named(tmp_path):
    questions, annotations = _vqa(tmp_path)
    data = json.loads(annotations.read_text())
    data["annotations"] = data["annotations"][:2]
    write_json(annotations, data)
    reader = VQAv2Reader(questions, tmp_path, annotations)
    assert len(reader) == 2 and any("no annotation for question 1003" in b.reason for b in reader.bad_records)
    not_questions = write_json(tmp_path / "questions.json", {"annotations": []})
    with pytest.raises(DataFileError, match=r"questions.json: no \['questions'\] field"):
        VQAv2Reader(not_questions, tmp_path)

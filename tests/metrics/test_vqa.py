"""Official VQA accuracy: normalisation and the 10 leave-one-out subsets, by hand."""

from __future__ import annotations

import random

import pytest

from polyfuse.metrics import VQAAccuracy, normalize_vqa_answer, vqa_accuracy, vqa_question_accuracy
from polyfuse.metrics.vqa_normalization import process_punctuation


@pytest.mark.parametrize("raw,expected", [
    ("Two", "2"),
    ("two dogs", "2 dogs"),
    ("none", "0"),
    ("ten", "10"),
    ("eleven", "eleven"),               # only none/zero..ten are mapped
    ("a dog.", "dog"),
    ("The red one", "red 1"),
    ("yes!", "yes"),
    ("red/white", "red white"),         # a mark not touching a space becomes a space
    ("red / white", "red white"),       # touching a space: deleted
    ("t-shirt", "t shirt"),
    ("1,000", "1000"),                  # digit,digit: every mark deleted
    ("3.5", "3.5"),                     # a period before a digit stays
    ("dont know", "don't know"),
    ("isnt it", "isn't it"),
    ("cat's toy", "cat's toy"),         # the apostrophe is not punctuation in the official list
    ("  Yes\n", "yes"),
    ("A\tbig\tdog", "big dog"),
])
def test_normalisation(raw: str, expected: str) -> None:
    assert normalize_vqa_answer(raw) == expected


def test_period_strip_keeps_the_official_count_of_32() -> None:
    assert process_punctuation("." * 40) == "." * 8


def test_leave_one_out_rule_by_hand() -> None:
    # k matching annotators out of 10: mean over the 10 subsets of min(1, matches among 9 / 3)
    expected = {0: 0.0, 1: 0.3, 2: 0.6, 3: 0.9, 4: 1.0, 10: 1.0}
    for k, score in expected.items():
        answers = ["yes"] * k + ["no"] * (10 - k)
        assert vqa_question_accuracy("yes", answers) == pytest.approx(score)


def test_prediction_is_normalised_before_matching() -> None:
    answers = ["2"] * 4 + ["3"] * 6
    assert vqa_question_accuracy("Two.", answers) == 1.0
    assert vqa_question_accuracy("the 3", answers) == 1.0


def test_official_quirk_references_only_punctuation_processed_when_they_disagree() -> None:
    # identical references are not processed at all: "two" never matches the normalised "2"
    assert vqa_question_accuracy("two", ["two"] * 10) == 0.0
    # disagreeing references get punctuation processing only (no number words -> digits)
    answers = ["two"] * 3 + ["2"] * 3 + ["yes!"] * 4
    assert vqa_question_accuracy("two", answers) == pytest.approx(0.9)     # matches the three "2"
    assert vqa_question_accuracy("yes", answers) == 0.0   # "yes!" -> "yes " (trailing space, never split)
    # datasets whose raw answers are not normalised (AV-digits) opt in to normalising them
    assert vqa_question_accuracy("two", ["two"] * 10, normalize_references=True) == 1.0
    assert vqa_question_accuracy("2", answers, normalize_references=True) == 1.0


def _official_transcription(prediction: str, answers: list[str]) -> float:
    """The official evaluate() loop on dict records (each annotator's answer has its own id)."""
    res = normalize_vqa_answer(prediction)
    records = [{"answer": a, "answer_id": i} for i, a in enumerate(answers)]
    if len({r["answer"] for r in records}) > 1:
        for record in records:
            record["answer"] = process_punctuation(record["answer"])
    accs = []
    for datum in records:
        others = [item for item in records if item != datum]
        accs.append(min(1, len([item for item in others if item["answer"] == res]) / 3))
    return sum(accs) / len(accs)


def test_random_cases_match_a_transcription_of_the_official_loop() -> None:
    rng = random.Random(0)
    pool = ["yes", "no", "2", "two", "red", "red.", "a red", "1,000", "1000", "t-shirt", "t shirt", "dont"]
    for _ in range(300):
        answers = [rng.choice(pool) for _ in range(10)]
        prediction = rng.choice(pool)
        assert vqa_question_accuracy(prediction, answers) == pytest.approx(_official_transcription(prediction, answers))


def test_accuracy_is_percent_and_metric_accumulates() -> None:
    predictions = ["yes", "2", "blue"]
    answers = [["yes"] * 10, ["2"] * 2 + ["3"] * 8, ["red"] * 10]
    assert vqa_accuracy(predictions, answers) == pytest.approx(100 * (1.0 + 0.6 + 0.0) / 3)
    metric = VQAAccuracy()
    metric.update(predictions[:2], answers[:2])
    metric.update(predictions[2:], answers[2:])
    assert metric.compute().item() == pytest.approx(100 * 1.6 / 3, rel=1e-6)
    with pytest.raises(ValueError, match="predictions"):
        vqa_accuracy(["a"], [])

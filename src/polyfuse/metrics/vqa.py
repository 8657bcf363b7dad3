"""VQA accuracy exactly as the official evaluation computes it."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from polyfuse.metrics.vqa_normalization import normalize_vqa_answer, process_punctuation

__all__ = ["vqa_accuracy", "vqa_question_accuracy", "VQAAccuracy", "normalize_vqa_answer"]


def vqa_question_accuracy(prediction: str, answers: Sequence[str], normalize_references: bool = False) -> float:
    """Accuracy of one prediction in ``[0, 1]`` against its human answers (official VQA rule).

    The prediction is normalised (:func:`normalize_vqa_answer`). As in the official script, the human
    answers are only punctuation-processed, and only when they disagree -- the VQA annotation
    files are already normalised. ``normalize_references=True`` fully normalises them first, for
    datasets whose raw answers are not (e.g. ``"two"`` among ``"2"``).

    The score is the mean over the leave-one-out subsets (each of the ``n`` answers left out in
    turn) of ``min(1, #matches among the other n - 1 / 3)``.
    """
    if not answers:
        raise ValueError("a VQA question needs at least one human answer")
    predicted = normalize_vqa_answer(prediction)
    references = [normalize_vqa_answer(a) for a in answers] if normalize_references else list(answers)
    if len(set(references)) > 1:
        references = [process_punctuation(a) for a in references]
    matches = sum(reference == predicted for reference in references)
    total = 0.0
    for reference in references:  # leave this annotator out
        others = matches - (reference == predicted)
        total += min(1.0, others / 3.0)
    return total / len(references)


def vqa_accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]],
                 normalize_references: bool = False) -> float:
    """Official VQA accuracy in percent (0-100), averaged over questions.

    Args:
        predictions: one predicted answer per question.
        answers: the human answers of each question (10 in VQA v1/v2).
        normalize_references: see :func:`vqa_question_accuracy`.
    """
    if len(predictions) != len(answers):
        raise ValueError(f"got {len(predictions)} predictions for {len(answers)} questions")
    if not predictions:
        raise ValueError("vqa_accuracy needs at least one question")
    scores = [vqa_question_accuracy(p, a, normalize_references) for p, a in zip(predictions, answers)]
    return 100.0 * sum(scores) / len(scores)


class VQAAccuracy(Metric):
    """Running official VQA accuracy (percent): ``update(predictions: list[str], answers: list[list[str]])``.

    Sums of per-question accuracies and counts are tensors, so they are reduced across processes.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, normalize_references: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.normalize_references = normalize_references
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> None:
        if len(predictions) != len(answers):
            raise ValueError(f"got {len(predictions)} predictions for {len(answers)} questions")
        self.total += sum(vqa_question_accuracy(p, a, self.normalize_references) for p, a in zip(predictions, answers))
        self.count += len(predictions)

    def compute(self) -> Tensor:
        return (100.0 * self.total / self.count.clamp_min(1)).float()

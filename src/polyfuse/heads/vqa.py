"""VQA as classification over an answer vocabulary with soft scores (BUTD / ViLT)."""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from polyfuse.batch import Batch
from polyfuse.fusion.base import FusionOutput
from polyfuse.heads.base import HEADS, HeadContext, TaskHead
from polyfuse.losses import vqa_soft_bce
from polyfuse.metrics import VQAAccuracy, normalize_vqa_answer

ScoreRule = Literal["butd", "min3", "exact"]


class AnswerVocabulary:
    """The candidate answers of a VQA classifier: the ``top_k`` most frequent normalised training answers.

    Every human answer is normalised with the official VQA rules (:func:`normalize_vqa_answer`)
    and counted; ties are broken alphabetically so the vocabulary is deterministic.
    """

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.index = {answer: i for i, answer in enumerate(self.answers)}
        if len(self.index) != len(self.answers):
            raise ValueError("AnswerVocabulary answers must be unique")

    @classmethod
    def from_answers(cls, answers: Iterable[Sequence[str]], top_k: int | None = None,
                     min_count: int = 1) -> "AnswerVocabulary":
        """Build from the human answers of each training question."""
        counts = Counter(normalize_vqa_answer(a) for question in answers for a in question)
        ranked = sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
        if not ranked:
            raise ValueError("AnswerVocabulary.from_answers got no answer")
        return cls(ranked[:top_k] if top_k else ranked)

    def __len__(self) -> int:
        return len(self.answers)

    def __getitem__(self, index: int) -> str:
        return self.answers[index]


def answer_score(count: int, total: int, rule: ScoreRule = "butd") -> float:
    """Soft target of an answer given by ``count`` of ``total`` annotators.

    ``"butd"``: 0, 0.3, 0.6, 0.9, 1 for 0, 1, 2, 3, >=4 (Teney et al., 2018; ViLT); ``"min3"``:
    ``min(1, count / 3)``; ``"exact"``: the official metric's value, the mean over the ``total``
    leave-one-out subsets of ``min(1, matches / 3)`` (equals ``"butd"`` for 10 annotators).
    """
    if rule == "butd":
        return (0.0, 0.3, 0.6, 0.9)[count] if count < 4 else 1.0
    if rule == "min3":
        return min(1.0, count / 3.0)
    if rule == "exact":
        return (count * min(1.0, (count - 1) / 3.0) + (total - count) * min(1.0, count / 3.0)) / total
    raise ValueError(f"unknown VQA score rule {rule!r}; valid: butd, min3, exact")


def soft_scores(answers: Sequence[Sequence[str]], vocabulary: AnswerVocabulary, rule: ScoreRule = "butd") -> Tensor:
    """``(B, A)`` soft targets from each question's human answers (normalised; out-of-vocabulary ignored)."""
    targets = torch.zeros(len(answers), len(vocabulary))
    for row, question in enumerate(answers):
        if question is None:  # a placeholder row (a sample that could not be read)
            continue
        counts = Counter(normalize_vqa_answer(a) for a in question)
        for answer, count in counts.items():
            if answer in vocabulary.index:
                targets[row, vocabulary.index[answer]] = answer_score(count, len(question), rule)
    return targets


@HEADS.register("vqa")
class VQAHead(TaskHead):
    """``logits = MLP(fused.pooled)`` over the answer vocabulary; soft-target BCE.

    The classifier is ViLT's (Kim et al., 2021): Linear(D, 2D) -> LayerNorm -> GELU ->
    Linear(2D, A). Targets are soft scores from the human answers in ``batch.extras[answers_field]``
    (:func:`soft_scores`), the loss :func:`~polyfuse.losses.vqa_soft_bce`. The metric ``vqa_acc`` is
    the official VQA accuracy (percent) of the arg-max answer against the human answers.

    Args:
        in_dim: fused width. vocabulary: an :class:`AnswerVocabulary` or a list of answers.
        hidden: classifier hidden width (default ``2 * in_dim``). dropout: before the classifier.
        score_rule: ``"butd"``, ``"min3"`` or ``"exact"`` (see :func:`answer_score`).
        answers_field: the extras key holding each question's human answers.
        normalize_references: normalise the human answers before the official comparison (for
            datasets whose answers are not pre-normalised, as AV-digits; VQA v2's are).
    """

    monitor = "vqa_acc"
    monitor_mode = "max"
    masks_invalid_rows = True

    def __init__(self, in_dim: int, vocabulary: AnswerVocabulary | Sequence[str], hidden: int | None = None,
                 dropout: float = 0.1, score_rule: ScoreRule = "butd", answers_field: str = "answers",
                 normalize_references: bool = True, dims: Mapping[str, int] | None = None) -> None:
        super().__init__(in_dim, dims)
        self.vocabulary = vocabulary if isinstance(vocabulary, AnswerVocabulary) else AnswerVocabulary(vocabulary)
        answer_score(1, 10, score_rule)  # validates the rule
        self.score_rule, self.answers_field, self.normalize_references = score_rule, answers_field, normalize_references
        hidden = hidden or 2 * in_dim
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.LayerNorm(hidden),
                                        nn.GELU(), nn.Linear(hidden, len(self.vocabulary)))

    def _answers(self, batch: Batch) -> list[Sequence[str]]:
        if self.answers_field not in batch.extras and batch.num_valid == 0:
            return [[] for _ in range(batch.batch_size)]  # a batch of placeholders has no extras
        if self.answers_field not in batch.extras:
            raise KeyError(f"VQAHead needs the human answers in batch.extras[{self.answers_field!r}]; extras has "
                           f"{list(batch.extras)} (AV-digits: data.task=vqa)")
        return batch.extras[self.answers_field]

    def forward(self, fused: FusionOutput, batch: Batch, context: HeadContext | None = None) -> Tensor:
        """``(B, A)`` answer logits."""
        return self.classifier(fused.pooled)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        targets = soft_scores(self._answers(batch), self.vocabulary, self.score_rule).to(outputs.device)
        return vqa_soft_bce(outputs, targets, batch.valid)

    def predict(self, outputs: Tensor) -> list[str]:
        """The arg-max answer of each question."""
        return [self.vocabulary[i] for i in outputs.argmax(dim=-1).tolist()]

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        return MetricCollection({"vqa_acc": VQAAccuracy(normalize_references=self.normalize_references)})

    def update_metrics(self, metrics: MetricCollection, outputs: Tensor, batch: Batch) -> None:
        metrics["vqa_acc"].update(self.predict(outputs.detach()), self._answers(batch))

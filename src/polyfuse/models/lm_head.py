"""The training module's view of :class:`~polyfuse.models.MultimodalLM`: its outputs, loss and answer metrics.

Metrics (all over answer tokens, see :mod:`polyfuse.models.chat` for the labels):

* ``answer_token_acc``: teacher-forced next-token accuracy, EOS left out;
* ``answer_exact_match`` (with ``eval_generate``, outside training): the generated answer to the last
  question (greedy, or beam search with ``eval_num_beams``) equals the reference after lower-casing
  and whitespace normalisation;
* per question type (``question_types``, e.g. AV-digits' ``written`` / ``spoken`` / ``both``), in
  validation and test: the same two as ``answer_token_acc_<type>`` and ``answer_exact_match_<type>``,
  where an answer's type is the ``"type"`` field of its assistant turn
  (:func:`polyfuse.models.chat.answer_types`);
* ``truncated_samples``: how many conversations were cut to ``max_length`` (a sum, not a mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import MeanMetric, Metric, MetricCollection, SumMetric

from polyfuse.batch import Batch
from polyfuse.heads.base import TaskHead
from polyfuse.models.chat import IGNORE_INDEX

__all__ = ["LMOutput", "LanguageModelingHead", "answer_runs", "normalise"]


@dataclass
class LMOutput:
    """``logits (B, L, V)``; ``loss``: mean over answer tokens (``None`` without labels); ``labels (B, L)``;
    ``generated``: answers to each conversation's last question when the model generates in
    evaluation (``eval_generate``; greedy or ``eval_num_beams`` beams), with ``references`` the conversations' last answers.
    ``answer_types``: per sample, the type of each answer turn in order (``None`` = untyped);
    ``reference_types``: the type of each last answer. ``truncated``: samples cut to ``max_length``.
    ``layer_attentions``: the LM's per-layer ``(B, H, L, L)`` attention probabilities, only when asked
    for (``output_attentions``)."""

    logits: Tensor
    loss: Tensor | None = None
    labels: Tensor | None = None
    generated: list[str] | None = None
    references: list[str] | None = None
    answer_types: list[list[str | None]] | None = None
    reference_types: list[str | None] | None = None
    layer_attentions: tuple[Tensor, ...] | None = None
    truncated: int = 0


def normalise(text: str) -> str:
    """Lower-case, single spaces: how generated and reference answers are compared."""
    return " ".join(text.lower().split())


def answer_runs(targets: Tensor) -> Tensor:
    """``(B, L)`` labels -> ``(B, L)`` index of the answer each label belongs to (0, 1, ...; -1 elsewhere).

    An answer is a run of consecutive labels other than ``-100`` (its tokens and its EOS); the turns
    between answers are masked, so runs and answer turns correspond one to one, in order."""
    answer = targets != IGNORE_INDEX
    starts = answer & ~torch.cat([answer.new_zeros(answer.shape[0], 1), answer[:, :-1]], dim=1)
    return torch.where(answer, starts.long().cumsum(1) - 1, torch.full_like(targets, -1))


class LanguageModelingHead(TaskHead):
    """Loss and metrics of :class:`MultimodalLM`: the loss is the LM's answer-token loss.

    Args: dims: modality -> encoder width. eos_id: the EOS token, left out of the accuracy (it
    closes every answer, so counting it would credit short answers for their ending alone).
    exact_match: also score generated answers (``answer_exact_match``) in validation and test.
    question_types: answer types that get their own metrics (``answer_token_acc_<type>``, ...).
    """

    needs_fusion = False
    monitor = "answer_token_acc"  # what polyfuse-eval reports by default; the experiments select on val/loss
    monitor_mode = "max"

    def __init__(self, dims: Mapping[str, int] | None = None, eos_id: int | None = None,
                 exact_match: bool = False, question_types: Sequence[str] | None = None) -> None:
        super().__init__(None, dims)
        self.eos_id, self.exact_match = eos_id, exact_match
        self.question_types = list(question_types or [])

    def loss(self, outputs: LMOutput, batch: Batch) -> Tensor:
        if outputs.loss is None:
            raise ValueError("MultimodalLM produced no loss: the batch has no conversations with answers")
        return outputs.loss

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        """``answer_token_acc`` (+ per type); with ``exact_match`` and outside training also
        ``answer_exact_match`` (+ per type)."""
        names = ["answer_token_acc"]
        if stage != "train" and self.exact_match:
            names.append("answer_exact_match")
        suffixes = [""] + ([f"_{t}" for t in self.question_types] if stage != "train" else [])
        metrics: dict[str, Metric] = {f"{name}{suffix}": MeanMetric() for name in names for suffix in suffixes}
        return MetricCollection({**metrics, "truncated_samples": SumMetric()})

    def update_metrics(self, metrics: MetricCollection, outputs: LMOutput, batch: Batch) -> None:
        present = set(metrics.keys(keep_base=True))
        if "truncated_samples" in present:
            metrics["truncated_samples"].update(float(outputs.truncated))
        if outputs.generated is not None and outputs.references is not None and "answer_exact_match" in present:
            kinds = outputs.reference_types or [None] * len(outputs.references)
            for generated, reference, kind in zip(outputs.generated, outputs.references, kinds):
                score = float(normalise(generated) == normalise(reference))
                metrics["answer_exact_match"].update(score)
                if f"answer_exact_match_{kind}" in present:
                    metrics[f"answer_exact_match_{kind}"].update(score)
        if outputs.labels is None:
            return
        targets = outputs.labels[:, 1:]
        answer = (targets != IGNORE_INDEX) & (targets != (-1 if self.eos_id is None else self.eos_id))
        correct = (outputs.logits[:, :-1].argmax(-1) == targets) & answer
        self._update_accuracy(metrics["answer_token_acc"], correct, answer)
        if not self.question_types or outputs.answer_types is None or \
                f"answer_token_acc_{self.question_types[0]}" not in present:
            return
        runs = answer_runs(targets)
        for kind in self.question_types:
            selected = torch.zeros_like(answer)
            for b, kinds in enumerate(outputs.answer_types):
                for index in [k for k, found in enumerate(kinds) if found == kind]:
                    selected[b] |= runs[b] == index
            self._update_accuracy(metrics[f"answer_token_acc_{kind}"], correct & selected, answer & selected)

    @staticmethod
    def _update_accuracy(metric: MeanMetric, correct: Tensor, counted: Tensor) -> None:
        if bool(counted.any()):
            total = counted.sum()
            metric.update(correct.sum() / total, weight=total)

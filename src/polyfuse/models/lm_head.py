"""The training module's view of :class:`~polyfuse.models.MultimodalLM`: its outputs, loss and answer metrics.

Metrics (all over answer tokens, see :mod:`polyfuse.models.chat` for the labels):

* ``answer_token_acc``: teacher-forced next-token accuracy, EOS left out;
* with ``eval_generate``, outside training, over every generated answer (each question of each
  conversation, or the last ones with ``eval_turns="last"``; :mod:`polyfuse.models.multimodal_lm_eval`;
  greedy, or beam search with ``eval_num_beams``):

  - ``answer_exact_match``: the answer equals the turn's reference after lower-casing and
    whitespace normalisation;
  - ``answer_vqa_acc``: polyfuse's official VQA accuracy (:func:`polyfuse.metrics.vqa_question_accuracy`,
    in ``[0, 1]``) against the turn's ``"answers"`` when it has several (soft: ``min(1, matches / 3)``
    averaged over leave-one-out subsets), else VQA-normalised equality with its one reference;
  - ``answer_<metric>_<type>`` for the types in ``caption_types``: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D
    of those answers (:class:`polyfuse.metrics.CaptionScores`, percent; needs Java);
* per question type (``question_types``, e.g. AV-digits' ``written`` / ``spoken`` / ``both``), in
  validation and test: ``answer_token_acc_<type>``, ``answer_exact_match_<type>`` and
  ``answer_vqa_acc_<type>``, where an answer's type is the ``"type"`` field of its assistant turn
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
from polyfuse.metrics import CaptionScores, normalize_vqa_answer, vqa_question_accuracy
from polyfuse.models.chat import IGNORE_INDEX

__all__ = ["AnswerCaptionScores", "LMOutput", "LanguageModelingHead", "answer_runs", "answer_vqa_accuracy",
           "normalise"]


@dataclass
class LMOutput:
    """``logits (B, L, V)``; ``loss``: mean over answer tokens (``None`` without labels); ``labels (B, L)``;
    ``generated``: the answers generated in evaluation (``eval_generate``), flat over (sample, question),
    with ``references`` their reference texts, ``reference_answers`` all references of each (a turn's
    ``"answers"``), ``reference_types`` their types and ``generated_from`` their ``(sample, answer
    index)``. ``answer_types``: per sample, the type of each answer turn in order (``None`` = untyped).
    ``truncated``: samples cut to ``max_length``.
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
    reference_answers: list[list[str]] | None = None
    generated_from: list[tuple[int, int]] | None = None


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


def answer_vqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    """VQA accuracy of one generated answer in ``[0, 1]``: the official soft accuracy
    (:func:`~polyfuse.metrics.vqa_question_accuracy`, references normalised too) with several
    references; with one, VQA-normalised equality (the official rule would give 0: it leaves one out)."""
    if len(references) > 1:
        return vqa_question_accuracy(prediction, references, normalize_references=True)
    return float(normalize_vqa_answer(prediction) == normalize_vqa_answer(references[0]))


class AnswerCaptionScores(CaptionScores):
    """:class:`~polyfuse.metrics.CaptionScores` of the generated answers of one type, reported as
    ``answer_<metric>_<type>`` (``answer_CIDEr_caption``); gathered across processes by id."""

    def __init__(self, kind: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kind = kind

    def compute(self) -> dict[str, float]:
        return {f"answer_{name}_{self.kind}": value for name, value in super().compute().items()}


class LanguageModelingHead(TaskHead):
    """Loss and metrics of :class:`MultimodalLM`: the loss is the LM's answer-token loss.

    Args: dims: modality -> encoder width. eos_id: the EOS token, left out of the accuracy (it
    closes every answer, so counting it would credit short answers for their ending alone).
    exact_match: also score generated answers (``answer_exact_match``, ``answer_vqa_acc``) in
    validation and test. question_types: answer types that get their own metrics
    (``answer_token_acc_<type>``, ...). caption_types: answer types whose generated answers also get
    caption scores (with ``exact_match``).
    """

    needs_fusion = False
    monitor = "answer_token_acc"  # what polyfuse-eval reports by default; the experiments select on val/loss
    monitor_mode = "max"

    def __init__(self, dims: Mapping[str, int] | None = None, eos_id: int | None = None,
                 exact_match: bool = False, question_types: Sequence[str] | None = None,
                 caption_types: Sequence[str] | None = None) -> None:
        super().__init__(None, dims)
        self.eos_id, self.exact_match = eos_id, exact_match
        self.question_types = list(question_types or [])
        self.caption_types = list(caption_types or [])

    def loss(self, outputs: LMOutput, batch: Batch) -> Tensor:
        if outputs.loss is None:
            raise ValueError("MultimodalLM produced no loss: the batch has no conversations with answers")
        return outputs.loss

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        """``answer_token_acc`` (+ per type); with ``exact_match`` and outside training also
        ``answer_exact_match`` and ``answer_vqa_acc`` (+ per type) and the caption scores of ``caption_types``."""
        names = ["answer_token_acc"]
        generated = stage != "train" and self.exact_match
        if generated:
            names += ["answer_exact_match", "answer_vqa_acc"]
        suffixes = [""] + ([f"_{t}" for t in self.question_types] if stage != "train" else [])
        metrics: dict[str, Metric] = {f"{name}{suffix}": MeanMetric() for name in names for suffix in suffixes}
        if generated:
            metrics.update({f"answer_captions_{kind}": AnswerCaptionScores(kind) for kind in self.caption_types})
        return MetricCollection({**metrics, "truncated_samples": SumMetric()})

    def update_metrics(self, metrics: MetricCollection, outputs: LMOutput, batch: Batch) -> None:
        present = set(metrics.keys(keep_base=True))
        if "truncated_samples" in present:
            metrics["truncated_samples"].update(float(outputs.truncated))
        if outputs.generated is not None and outputs.references is not None and "answer_exact_match" in present:
            self._update_generated(metrics, present, outputs, batch)
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

    def _update_generated(self, metrics: MetricCollection, present: set[str], outputs: LMOutput, batch: Batch) -> None:
        """Exact match, VQA accuracy (+ per type) and caption scores of each generated answer."""
        count = len(outputs.generated or [])
        kinds = outputs.reference_types or [None] * count
        references = outputs.reference_answers or [[reference] for reference in outputs.references or []]
        sources = outputs.generated_from or [(b, 0) for b in range(count)]
        captions: dict[str, tuple[list[str], list[str], list[list[str]]]] = {}
        for generated, reference, answers, kind, (b, k) in zip(outputs.generated or [], outputs.references or [],
                                                                references, kinds, sources):
            scores = {"answer_exact_match": float(normalise(generated) == normalise(reference)),
                      "answer_vqa_acc": answer_vqa_accuracy(generated, answers)}
            for name, score in scores.items():
                metrics[name].update(score)
                if f"{name}_{kind}" in present:
                    metrics[f"{name}_{kind}"].update(score)
            if kind in self.caption_types:
                sample = batch.ids[b] if b < len(batch.ids) else str(b)
                ids, predictions, refs = captions.setdefault(str(kind), ([], [], []))
                ids.append(f"{sample}/{k}")
                predictions.append(generated)
                refs.append(list(answers))
        for kind in self.caption_types:  # updated even when empty: every rank then joins compute's gather
            if f"answer_captions_{kind}" in present:
                metrics[f"answer_captions_{kind}"].update(*captions.get(kind, ([], [], [])))

    @staticmethod
    def _update_accuracy(metric: MeanMetric, correct: Tensor, counted: Tensor) -> None:
        if bool(counted.any()):
            total = counted.sum()
            metric.update(correct.sum() / total, weight=total)

"""Generative VQA: the answer is decoded as text by the captioning decoder."""

from __future__ import annotations

from typing import Any, Mapping

from torchmetrics import MetricCollection

from polyfuse.batch import Batch
from polyfuse.heads.base import HEADS
from polyfuse.heads.captioning import CaptioningHead
from polyfuse.metrics import VQAAccuracy


@HEADS.register("generative_vqa")
class GenerativeVQAHead(CaptioningHead):
    """Answer questions by generating the answer text (open-ended VQA as in SimVLM / BLIP).

    Same decoder and training as :class:`CaptioningHead` (teacher forcing on
    ``batch.targets[target]``, the tokenized most common answer), greedy decoding by default, and the
    official VQA accuracy (``vqa_acc``, percent) of the generated text against the human answers in
    ``batch.extras[answers_field]`` -- so answers outside any fixed vocabulary can be produced.

    Args: see :class:`CaptioningHead`; ``answers_field``: extras key of the human answers;
    ``normalize_references``: see :class:`~polyfuse.metrics.VQAAccuracy`.
    """

    monitor = "vqa_acc"
    monitor_mode = "max"

    def __init__(self, in_dim: int, dims: Mapping[str, int] | None = None, *, vocab_size: int,
                 target: str = "answer_ids", answers_field: str = "answers", max_length: int = 6,
                 num_beams: int = 1, normalize_references: bool = True, **options: Any) -> None:
        super().__init__(in_dim, dims, vocab_size=vocab_size, target=target, references=answers_field,
                         max_length=max_length, num_beams=num_beams, **options)
        self.normalize_references = normalize_references

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        if stage == "train":  # nothing is generated while training
            return MetricCollection({})
        return MetricCollection({"vqa_acc": VQAAccuracy(normalize_references=self.normalize_references)})

    def update_metrics(self, metrics: MetricCollection, outputs: dict[str, Any], batch: Batch) -> None:
        if outputs["generated"] is not None and "vqa_acc" in metrics.keys(keep_base=True):
            metrics["vqa_acc"].update(outputs["generated"], self._references(batch))

"""Single-label classification head."""

from __future__ import annotations

from typing import Mapping

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from polyfuse.batch import Batch
from polyfuse.fusion.base import FusionOutput
from polyfuse.heads.base import HEADS, HeadContext, TaskHead
from polyfuse.losses.masking import mask_rows, masked_mean


@HEADS.register("classification")
class ClassificationHead(TaskHead):
    """``logits = MLP(fused.pooled)``; cross-entropy with optional label smoothing.

    Metrics: accuracy (micro, ``acc``) and macro F1 (``f1_macro``) via torchmetrics. Placeholder
    rows (``batch.valid``) are left out of the loss.

    Args:
        in_dim: fused width. dims: encoder widths (unused). num_classes: number of classes.
        hidden: hidden width (0 = linear).
        dropout: dropout before the classifier. label_smoothing: as in ``F.cross_entropy``.
        target: name of the target in ``batch.targets``.
    """

    monitor = "acc"
    monitor_mode = "max"
    masks_invalid_rows = True

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 0, dropout: float = 0.0,
                 label_smoothing: float = 0.0, target: str = "label", dims: Mapping[str, int] | None = None) -> None:
        super().__init__(in_dim, dims)
        self.num_classes, self.label_smoothing, self.target = num_classes, label_smoothing, target
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)]
        else:
            layers.append(nn.Linear(in_dim, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, fused: FusionOutput, batch: Batch, context: HeadContext | None = None) -> Tensor:
        """``(B, num_classes)`` logits."""
        return self.classifier(fused.pooled)

    def _labels(self, batch: Batch) -> Tensor:
        if self.target not in batch.targets:
            raise KeyError(f"ClassificationHead needs target {self.target!r}; batch has {list(batch.targets)}")
        return batch.targets[self.target]

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        per_row = F.cross_entropy(mask_rows(outputs, batch.valid), self._labels(batch),
                                  label_smoothing=self.label_smoothing, reduction="none")
        return masked_mean(per_row, batch.valid)

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        return MetricCollection({
            "acc": MulticlassAccuracy(self.num_classes, average="micro"),
            "f1_macro": MulticlassF1Score(self.num_classes, average="macro"),
        })

    def update_metrics(self, metrics: MetricCollection, outputs: Tensor, batch: Batch) -> None:
        metrics.update(outputs.detach(), self._labels(batch))

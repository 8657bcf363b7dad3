"""Multi-label classification head (e.g. MM-IMDb genres)."""

from __future__ import annotations

from typing import Mapping

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, MultilabelF1Score

from polyfuse.batch import Batch
from polyfuse.fusion.base import FusionOutput
from polyfuse.heads.base import HEADS, HeadContext, TaskHead
from polyfuse.losses.masking import mask_rows, masked_mean


@HEADS.register("multilabel")
class MultiLabelClassificationHead(TaskHead):
    """``logits = MLP(fused.pooled)``, one independent sigmoid per label, binary cross-entropy.

    Metrics (torchmetrics, threshold on the sigmoid): ``f1_micro``, ``f1_macro``, ``f1_weighted``
    and ``f1_samples`` -- the four F1 scores MM-IMDb papers report (Arevalo et al., 2017, "Gated
    Multimodal Units for Information Fusion").

    Args:
        in_dim: fused width. num_labels: number of labels. hidden: hidden width (0 = linear).
        dropout: dropout before the classifier. threshold: decision threshold on probabilities.
        pos_weight: optional per-label positive weight for the BCE (class imbalance).
        target: name of the multi-hot ``(B, num_labels)`` target in ``batch.targets``.
    """

    monitor = "f1_micro"
    monitor_mode = "max"
    masks_invalid_rows = True

    def __init__(self, in_dim: int, num_labels: int, hidden: int = 0, dropout: float = 0.0, threshold: float = 0.5,
                 pos_weight: list[float] | None = None, target: str = "labels",
                 dims: Mapping[str, int] | None = None) -> None:
        super().__init__(in_dim, dims)
        self.num_labels, self.threshold, self.target = num_labels, threshold, target
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_labels)]
        else:
            layers.append(nn.Linear(in_dim, num_labels))
        self.classifier = nn.Sequential(*layers)
        if pos_weight is not None and len(pos_weight) != num_labels:
            raise ValueError(f"pos_weight has {len(pos_weight)} entries for {num_labels} labels")
        self.register_buffer("pos_weight", None if pos_weight is None else Tensor(pos_weight), persistent=False)

    def forward(self, fused: FusionOutput, batch: Batch, context: HeadContext | None = None) -> Tensor:
        """``(B, num_labels)`` logits."""
        return self.classifier(fused.pooled)

    def _labels(self, batch: Batch) -> Tensor:
        if self.target not in batch.targets:
            raise KeyError(f"MultiLabelClassificationHead needs a multi-hot target {self.target!r}; "
                           f"batch has {list(batch.targets)}")
        labels = batch.targets[self.target]
        if labels.shape[-1] != self.num_labels:
            raise ValueError(f"target {self.target!r} has {labels.shape[-1]} labels, the head {self.num_labels}")
        return labels

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        labels = self._labels(batch).to(outputs.dtype)
        per_label = F.binary_cross_entropy_with_logits(mask_rows(outputs, batch.valid), labels,
                                                       pos_weight=self.pos_weight, reduction="none")
        return masked_mean(per_label, batch.valid)  # the element mean over valid rows

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        options = dict(num_labels=self.num_labels, threshold=self.threshold)
        return MetricCollection({f"f1_{average}": MultilabelF1Score(average=average, **options)
                                 for average in ("micro", "macro", "weighted")}
                                | {"f1_samples": _SamplesF1(**options)})

    def update_metrics(self, metrics: MetricCollection, outputs: Tensor, batch: Batch) -> None:
        metrics.update(outputs.detach().sigmoid(), self._labels(batch).long())


class _SamplesF1(BinaryF1Score):
    """Per-sample F1 over its labels, averaged over samples (scikit-learn's ``average="samples"``)."""

    def __init__(self, num_labels: int, threshold: float) -> None:
        super().__init__(threshold=threshold, multidim_average="samplewise")

    def compute(self) -> Tensor:
        return super().compute().float().mean()

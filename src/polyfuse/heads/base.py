"""The task-head protocol: a head maps the fused representation to predictions and owns its loss and metrics."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchmetrics import MetricCollection

from polyfuse.batch import Batch
from polyfuse.fusion.base import FusionOutput


class TaskHead(nn.Module):
    """Base class for task heads.

    A head is built from the fused width (``in_dim``) and implements:

    * :meth:`forward` ``(fused, batch) -> outputs`` (logits, embeddings, ...),
    * :meth:`loss` ``(outputs, batch) -> scalar``,
    * :meth:`make_metrics` -> a fresh :class:`torchmetrics.MetricCollection` (one per stage),
    * :meth:`update_metrics` ``(metrics, outputs, batch)``.

    ``monitor`` names the validation metric that selects the best checkpoint, ``monitor_mode``
    whether higher (``"max"``) or lower is better.
    """

    monitor: str = "loss"
    monitor_mode: str = "min"

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim

    def forward(self, fused: FusionOutput, batch: Batch) -> Any:
        raise NotImplementedError

    def loss(self, outputs: Any, batch: Batch) -> Tensor:
        raise NotImplementedError

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({})

    def update_metrics(self, metrics: MetricCollection, outputs: Any, batch: Batch) -> None:
        return None

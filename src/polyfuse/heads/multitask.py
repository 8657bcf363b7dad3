"""Several task heads on one model: per-task loss weights, per-task metrics."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.wrappers.abstract import WrapperMetric

from polyfuse.batch import Batch
from polyfuse.fusion.base import FusionOutput
from polyfuse.heads.base import HEADS, HeadContext, LossOutput, TaskHead, update_valid_metrics, valid_rows_loss


class TaskMetrics(WrapperMetric):
    """One task's :class:`MetricCollection` whose results are reported as ``<task>/<name>``.

    The collection itself (``.metrics``) is what the task head updates; synchronisation and state
    are the wrapped metrics' own.
    """

    def __init__(self, metrics: MetricCollection, task: str) -> None:
        super().__init__()
        self.metrics, self.task = metrics, task

    def update(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("update the wrapped collection (TaskMetrics.metrics) through its task head")

    def compute(self) -> dict[str, Any]:
        return {f"{self.task}/{name}": value for name, value in self.metrics.compute().items()}

    def reset(self) -> None:
        self.metrics.reset()
        super().reset()


@HEADS.register("multitask")
class MultiTaskHead(TaskHead):
    """A dict of task heads sharing the model's encoders and fusion (e.g. retrieval + VQA + captioning).

    Every head sees the same ``(fused, batch, context)``. The loss is ``Σ_t w_t L_t`` with per-task
    weights from the config (default 1); the per-task losses are logged as ``<task>/loss``, and
    every task's evaluation metrics as ``<task>/<metric>`` (e.g. ``val/vqa/vqa_acc``,
    ``val/captioning/CIDEr``; none during training).

    Args:
        in_dim: fused width (``None`` without a fusion). dims: encoder widths.
        heads: task name -> a head factory (Hydra partial, called with ``in_dim`` and ``dims``) or head.
        weights: task name -> loss weight.
        monitor: the metric that selects checkpoints, ``"<task>/<metric>"`` (default: the first
            task's own monitor). monitor_mode: ``"max"`` or ``"min"`` (default: that task's).
    """

    needs_fusion = False
    masks_invalid_rows = True  # each task head's loss is masked on its own (valid_rows_loss)

    def __init__(self, in_dim: int | None, dims: Mapping[str, int] | None = None, *,
                 heads: Mapping[str, Callable[..., TaskHead] | TaskHead], weights: Mapping[str, float] | None = None,
                 monitor: str | None = None, monitor_mode: str | None = None) -> None:
        super().__init__(in_dim, dims)
        if not heads:
            raise ValueError("MultiTaskHead needs at least one task head")
        bad = [name for name in heads if "/" in name or "." in name]
        if bad:
            raise ValueError(f"task names may not contain '/' or '.': {bad}")
        self.heads = nn.ModuleDict({name: head if isinstance(head, nn.Module) else head(in_dim=in_dim, dims=dims)
                                    for name, head in heads.items()})
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in self.heads}
        unknown = [name for name in (weights or {}) if name not in self.heads]
        if unknown:
            raise KeyError(f"loss weights for unknown tasks {unknown}; tasks: {list(self.heads)}")
        first_name, first = next(iter(self.heads.items()))
        self.monitor = monitor or f"{first_name}/{first.monitor}"
        task = self.monitor.split("/", 1)[0]
        if task not in self.heads:
            raise KeyError(f"monitor {self.monitor!r} names no task; tasks: {list(self.heads)}")
        self.monitor_mode = monitor_mode or self.heads[task].monitor_mode

    def forward(self, fused: FusionOutput | None, batch: Batch, context: HeadContext | None = None) -> dict[str, Any]:
        return {name: head(fused, batch, context) for name, head in self.heads.items()}

    def loss(self, outputs: dict[str, Any], batch: Batch) -> LossOutput:
        terms: dict[str, Tensor] = {}
        total: Tensor | float = 0.0
        for name, head in self.heads.items():
            value = valid_rows_loss(head, outputs[name], batch)
            if isinstance(value, dict):
                terms.update({f"{name}/{key}": term for key, term in value.items() if key != "loss"})
                value = value["loss"]
            terms[f"{name}/loss"] = value
            total = total + self.weights[name] * value
        return {"loss": total, **terms}  # type: ignore[dict-item]

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        if stage == "train":  # training logs the per-task losses; task metrics are evaluated on val / test
            return MetricCollection({})
        return MetricCollection({name: TaskMetrics(head.make_metrics(stage), name)
                                 for name, head in self.heads.items()})

    def update_metrics(self, metrics: MetricCollection, outputs: dict[str, Any], batch: Batch) -> None:
        present = metrics.keys(keep_base=True)
        for name, head in self.heads.items():
            if name in present:
                head.update_metrics(metrics[name].metrics, outputs[name], batch)

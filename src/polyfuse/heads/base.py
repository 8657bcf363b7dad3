"""The task-head protocol: a head maps the fused representation to predictions and owns its loss and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import Tensor, nn
from torchmetrics import MetricCollection

from polyfuse.batch import Batch, Encoded, ModalityInput
from polyfuse.fusion.base import FusionOutput
from polyfuse.losses.masking import select_rows, zero_with_graph
from polyfuse.registry import Registry

__all__ = ["TaskHead", "HeadContext", "HeadFactory", "HEADS", "LossOutput", "valid_rows_loss", "update_valid_metrics"]

#: a loss is a scalar, or a dict with the scalar to optimise under ``"loss"`` plus named terms to log
LossOutput = Tensor | dict[str, Tensor]


@dataclass
class HeadContext:
    """What the model lends its head besides the fused output, for objectives that need more.

    Attributes:
        encoded: this batch's per-modality encoder outputs (dual-stream heads embed them directly).
        encode: re-encode a (modified) batch with the model's encoders (MLM re-encodes masked text).
        encode_modality: encode one input with one modality's encoder (``("text", ModalityInput)``),
            e.g. captions held as targets, for retrieval next to VQA on question text.
        fuse: the model's fusion, on a dict of :class:`Encoded` (ITM fuses mismatched pairs);
            ``None`` when the model has no fusion.
    """

    encoded: dict[str, Encoded]
    encode: Callable[[Batch], dict[str, Encoded]] | None = None
    encode_modality: Callable[[str, ModalityInput], Encoded] | None = None
    fuse: Callable[..., FusionOutput] | None = None


class TaskHead(nn.Module):
    """Base class for task heads.

    A head is built as ``head(in_dim=fusion.out_dim, dims={modality: encoder width})`` and implements:

    * :meth:`forward` ``(fused, batch, context) -> outputs`` (logits, embeddings, ...); ``fused`` is
      ``None`` when the model has no fusion (dual-stream retrieval);
    * :meth:`loss` ``(outputs, batch) -> scalar`` or ``{"loss": scalar, "<term>": scalar, ...}``
      (extra terms are logged as ``train/<term>``);
    * :meth:`make_metrics` ``(stage)`` -> a fresh :class:`torchmetrics.MetricCollection` for ``"train"``,
      ``"val"`` or ``"test"``. Training metrics are logged as metric objects, so each must compute
      to a scalar tensor; split-level metrics that return several values (retrieval recall, caption
      scores) belong to the evaluation stages;
    * :meth:`update_metrics` ``(metrics, outputs, batch)``.

    Placeholder rows (``batch.valid``, samples that could not be read): a head that leaves them out
    of its loss itself sets ``masks_invalid_rows = True`` (with :mod:`polyfuse.losses.masking`);
    for any other head the LightningModule calls :meth:`loss` on the valid rows only
    (:func:`~polyfuse.losses.masking.select_rows`). Metrics are always updated with valid rows only.

    ``monitor`` names the validation metric that selects the best checkpoint, ``monitor_mode``
    whether higher (``"max"``) or lower is better. ``needs_fusion = False`` marks heads that work
    on the per-modality encodings alone.

    Args:
        in_dim: fused width (``None`` without a fusion). dims: modality -> encoder output width.
    """

    monitor: str = "loss"
    monitor_mode: str = "min"
    needs_fusion: bool = True
    masks_invalid_rows: bool = False

    def __init__(self, in_dim: int | None, dims: Mapping[str, int] | None = None) -> None:
        super().__init__()
        if in_dim is None and self.needs_fusion:
            raise ValueError(f"{type(self).__name__} reads the fused representation: configure a fusion "
                             "(model.fusion), or use a head that works on the encoders alone")
        self.in_dim = in_dim
        self.dims = dict(dims or {})

    def forward(self, fused: FusionOutput | None, batch: Batch, context: HeadContext | None = None) -> Any:
        raise NotImplementedError

    def loss(self, outputs: Any, batch: Batch) -> LossOutput:
        raise NotImplementedError

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        return MetricCollection({})

    def update_metrics(self, metrics: MetricCollection, outputs: Any, batch: Batch) -> None:
        return None

    def require(self, context: HeadContext | None, *fields: str) -> HeadContext:
        """``context`` with ``fields`` set, or an error naming what this head needs from the model."""
        missing = [name for name in fields if context is None or getattr(context, name) is None]
        if missing:
            raise ValueError(f"{type(self).__name__} needs the model to pass {missing} in its HeadContext "
                             "(polyfuse.models.MultimodalModel does)")
        return context  # type: ignore[return-value]


HeadFactory = Callable[..., TaskHead]
HEADS: Registry[type[TaskHead]] = Registry("head", tag=None)
"""The head registry: ``polyfuse.heads.build("vqa", in_dim=256, vocabulary=[...])`` (:mod:`polyfuse.registry`)."""


def _float_tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value] if value.is_floating_point() and value.requires_grad else []
    if isinstance(value, dict):
        return [t for item in value.values() for t in _float_tensors(item)]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _float_tensors(item)]
    return []


def valid_rows_loss(head: TaskHead, outputs: Any, batch: Batch) -> LossOutput:
    """``head.loss`` without the placeholder rows of ``batch`` (``batch.valid``).

    A head with ``masks_invalid_rows`` gets the whole batch (contrastive losses need equal sizes on
    every rank); any other head gets only the valid rows of its outputs and batch
    (:func:`~polyfuse.losses.masking.select_rows`). Without a valid row the loss is ``0`` with a
    graph through the outputs (DDP still all-reduces the gradients on that rank).
    """
    if batch.valid is None or head.masks_invalid_rows:
        return head.loss(outputs, batch)
    if batch.num_valid == 0:
        tensors = _float_tensors(outputs)
        return zero_with_graph(*tensors) if tensors else head.loss(outputs, batch)
    return head.loss(select_rows(outputs, batch.valid, batch.batch_size), select_rows(batch, batch.valid))


def update_valid_metrics(head: TaskHead, metrics: MetricCollection, outputs: Any, batch: Batch) -> None:
    """``head.update_metrics`` with only the valid rows of ``outputs`` and ``batch``; nothing when
    the batch holds no valid row."""
    if batch.valid is None:
        head.update_metrics(metrics, outputs, batch)
    elif batch.num_valid:
        head.update_metrics(metrics, select_rows(outputs, batch.valid, batch.batch_size),
                            select_rows(batch, batch.valid))

"""NLVR2-style classification of one text against several images, one fused pass per image."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from polyfuse.batch import Batch
from polyfuse.fusion.base import FusionOutput
from polyfuse.heads.base import HEADS, HeadContext, TaskHead


@HEADS.register("nlvr2")
class ImagesAndTextHead(TaskHead):
    """Is the statement true of this pair of images? (NLVR2, Suhr et al., ACL 2019; the head of ViLT,
    Kim, Son & Kim, 2021, HF ``ViltForImagesAndTextClassification``.)

    The text is fused with each image modality in its own pass through the model's fusion
    (``context.fuse({text, image_i})``); the pooled outputs, side by side ``(B, n * D)``, go through
    ``Linear(nD, nD) -> LayerNorm -> GELU -> Linear(nD, num_labels)``. The ``fused`` argument (a joint
    pass over every modality, if the model made one) is not used: a model may pass ``None``.

    Outputs ``{"logits": (B, num_labels), "pooled": (B, n * D), "attentions": {"image{i}/<map>": ...}}``
    (the maps when the model's ``fuse`` returns them). Loss: cross-entropy against
    ``batch.targets[target]`` (class indices ``(B,)``). Metric: ``acc``.

    Padding and missing modalities: each pass is an ordinary fusion call, so padded tokens are masked
    and an absent image is masked in its own pass (its pooled output then sees the text only).

    Args:
        in_dim: fused width D. dims: encoder widths (must hold ``text`` and every image modality).
        num_labels: classes (NLVR2: 2, false / true). labels: class names (``num_labels`` from their count).
        images: the image modalities, one pass each, in order. text: the text modality.
        target: the ``batch.targets`` key of the class index.
    """

    monitor = "acc"
    monitor_mode = "max"

    def __init__(self, in_dim: int, dims: Mapping[str, int] | None = None, *, num_labels: int | None = None,
                 labels: Sequence[str] | None = None, images: Sequence[str] = ("image", "image_2"),
                 text: str = "text", target: str = "label") -> None:
        super().__init__(in_dim, dims)
        if labels is None and not num_labels:
            raise ValueError("ImagesAndTextHead needs num_labels or labels (class names)")
        missing = [m for m in (text, *images) if self.dims and m not in self.dims]
        if missing:
            raise KeyError(f"ImagesAndTextHead fuses {text!r} with {list(images)}, but the model has no "
                           f"{missing}; dims: {list(self.dims)}")
        self.labels = None if labels is None else [str(label) for label in labels]
        self.num_labels = len(self.labels) if self.labels is not None else int(num_labels or 0)
        self.images, self.text, self.target = tuple(images), text, target
        width = in_dim * len(self.images)
        self.classifier = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.GELU(),
                                        nn.Linear(width, self.num_labels))

    @property
    def num_images(self) -> int:
        return len(self.images)

    def forward(self, fused: FusionOutput | None, batch: Batch | None,
                context: HeadContext | None = None) -> dict[str, Any]:
        context = self.require(context, "encoded", "fuse")
        absent = [m for m in (self.text, *self.images) if m not in context.encoded]
        if absent:
            raise KeyError(f"ImagesAndTextHead needs the encoded {absent}; encoded: {list(context.encoded)}")
        pooled, maps = [], {}
        for index, name in enumerate(self.images):
            single = context.fuse({self.text: context.encoded[self.text], name: context.encoded[name]})
            pooled.append(single.pooled)
            maps.update({f"image{index}/{key}": value for key, value in single.attentions.items()})
        joined = torch.cat(pooled, dim=-1)
        return {"logits": self.classifier(joined), "pooled": joined, "attentions": maps}

    def _targets(self, batch: Batch) -> Tensor:
        if self.target not in batch.targets:
            raise KeyError(f"ImagesAndTextHead needs the class index in batch.targets[{self.target!r}]; "
                           f"targets has {list(batch.targets)}")
        return batch.targets[self.target].view(-1).long()

    def loss(self, outputs: dict[str, Any], batch: Batch) -> Tensor:
        logits = outputs["logits"]
        return F.cross_entropy(logits.view(-1, self.num_labels), self._targets(batch).to(logits.device))

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(self.num_labels, average="micro")})

    def update_metrics(self, metrics: MetricCollection, outputs: dict[str, Any], batch: Batch) -> None:
        metrics["acc"].update(outputs["logits"].detach(), self._targets(batch).to(outputs["logits"].device))

"""Zero-shot classification from text prompts (CLIP, Radford et al., 2021)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from polyfuse.batch import Batch, ModalityInput
from polyfuse.fusion.base import FusionOutput
from polyfuse.heads.base import HEADS, HeadContext, TaskHead

Template = str | Callable[[str], str]


def prompts(class_name: str, templates: Sequence[Template]) -> list[str]:
    """One text per template: ``"a photo of a {}."`` (``str.format``) or a callable ``name -> text``."""
    return [t.format(class_name) if isinstance(t, str) else t(class_name) for t in templates]


def class_embeddings(encode_text: Callable[[list[str]], Tensor], class_names: Sequence[str],
                     templates: Sequence[Template]) -> Tensor:
    """``(num_classes, E)`` zero-shot classifier: per class, the mean over ``templates`` of the
    L2-normalised text embeddings of its prompts, normalised again (CLIP's prompt ensembling).

    ``encode_text``: a list of strings -> ``(N, E)`` embeddings (unnormalised is fine).
    """
    if not class_names or not templates:
        raise ValueError(f"zero-shot classes need class names and templates, got {len(class_names)} names "
                         f"and {len(templates)} templates")
    rows = []
    for name in class_names:
        embedded = F.normalize(encode_text(prompts(name, templates)), dim=-1)  # (T, E)
        rows.append(F.normalize(embedded.mean(dim=0), dim=-1))
    return torch.stack(rows)


def zero_shot_logits(image_features: Tensor, classifier: Tensor, scale: float = 100.0) -> Tensor:
    """``(B, C)`` = ``scale * normalize(image_features (B, E)) @ classifier (C, E)ᵀ``."""
    return scale * F.normalize(image_features, dim=-1) @ classifier.T


def topk_accuracy(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Percent of samples whose label is among the ``k`` largest logits, for each ``k`` (``top1``, ``top5``)."""
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (B, K)
    hits = ranked == labels[:, None]
    return {f"top{k}": 100.0 * hits[:, :k].any(dim=1).double().mean().item() for k in ks}


@HEADS.register("zero_shot")
class ZeroShotHead(TaskHead):
    """Classifies images by similarity to class embeddings built from text prompts; trains nothing.

    The class embeddings come from the model's own text encoder (``context.encode_modality``) on
    ``templates x class_names`` tokenised by ``tokenizer`` (:func:`class_embeddings`); the image
    embedding is the image encoder's pooled output. Both encoders must be ``output: pooled`` and
    embed to the same width (CLIP towers with their projections). The loss is the cross-entropy
    of the ``scale``-d logits; metrics ``top1`` / ``top5`` accuracy. Images of absent samples are
    zero vectors and score 0 against every class.

    Args:
        in_dim, dims: see :class:`TaskHead`. class_names: one name per label index.
        templates: prompt templates with ``{}`` for the class name. tokenizer: a ``tokenizer.json``
            (or checkpoint directory) read by :class:`~polyfuse.encoders.tokenize.TextTokenizer`, or a
            callable ``list[str] -> ModalityInput``. image, text: the modalities. target: label key.
        scale: logit scale (CLIP evaluates with 100). ks: top-k cut-offs.
    """

    monitor = "top1"
    monitor_mode = "max"
    needs_fusion = False

    def __init__(self, in_dim: int | None = None, dims: Mapping[str, int] | None = None, *,
                 class_names: Sequence[str], templates: Sequence[str],
                 tokenizer: str | Path | Callable[[list[str]], ModalityInput], image: str = "image",
                 text: str = "text", target: str = "label", scale: float = 100.0, ks: Sequence[int] = (1, 5),
                 max_length: int | None = None) -> None:
        super().__init__(in_dim, dims)
        if self.dims and self.dims.get(image) != self.dims.get(text):
            raise ValueError(f"ZeroShotHead: {image!r} and {text!r} encoders must embed to one width, got "
                             f"{self.dims.get(image)} and {self.dims.get(text)}")
        self.class_names, self.templates = list(class_names), list(templates)
        self.image, self.text, self.target, self.scale = image, text, target, float(scale)
        self.ks = tuple(k for k in ks if k <= len(self.class_names))
        if callable(tokenizer):
            self.tokenizer = tokenizer
        else:
            from polyfuse.encoders.tokenize import TextTokenizer

            self.tokenizer = TextTokenizer(tokenizer, max_length=max_length)
        self._cached: Tensor | None = None  # class embeddings, kept while evaluating without gradients

    def train(self, mode: bool = True) -> "ZeroShotHead":
        self._cached = None  # the text encoder may change in between
        return super().train(mode)

    def classifier(self, context: HeadContext, device: torch.device) -> Tensor:
        """``(num_classes, E)`` class embeddings; computed once per evaluation when gradients are off."""
        frozen = not self.training and not torch.is_grad_enabled()
        if frozen and self._cached is not None and self._cached.device == device:
            return self._cached
        encode = self.require(context, "encode_modality").encode_modality

        def embed(texts: list[str]) -> Tensor:
            tokens = self.tokenizer(texts)
            return encode(self.text, ModalityInput(tokens.values.to(device), tokens.mask.to(device))).tokens[:, 0]

        classes = class_embeddings(embed, self.class_names, self.templates)
        self._cached = classes if frozen else None
        return classes

    def forward(self, fused: FusionOutput | None, batch: Batch, context: HeadContext | None = None) -> Tensor:
        context = self.require(context, "encoded")
        if self.image not in context.encoded:
            raise KeyError(f"ZeroShotHead needs modality {self.image!r}; encoded: {list(context.encoded)}")
        image_features = context.encoded[self.image].tokens[:, 0]
        return zero_shot_logits(image_features, self.classifier(context, image_features.device), self.scale)

    def _labels(self, batch: Batch) -> Tensor:
        if self.target not in batch.targets:
            raise KeyError(f"ZeroShotHead needs target {self.target!r}; batch has {list(batch.targets)}")
        return batch.targets[self.target]

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(outputs, self._labels(batch))

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        classes = len(self.class_names)
        return MetricCollection({f"top{k}": MulticlassAccuracy(classes, top_k=k, average="micro") for k in self.ks})

    def update_metrics(self, metrics: MetricCollection, outputs: Tensor, batch: Batch) -> None:
        metrics.update(outputs.detach(), self._labels(batch))

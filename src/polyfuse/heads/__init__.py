"""Task heads: each owns its loss and metrics (see :class:`TaskHead`).

* classification: :class:`ClassificationHead`, :class:`MultiLabelClassificationHead`,
  :class:`ZeroShotHead` (CLIP prompts, no training)
* retrieval: :class:`ContrastiveHead` (dual-stream, CLIP / SigLIP), :class:`ITMHead` (single-stream)
* VQA: :class:`VQAHead` (answer vocabulary, soft scores), :class:`GenerativeVQAHead`
* one text, several images (NLVR2): :class:`ImagesAndTextHead`
* captioning: :class:`CaptioningHead` (transformer decoder, greedy / beam search, KV cache)
* pre-training: :class:`MLMHead`, :class:`ITMHead`
* several tasks at once: :class:`MultiTaskHead`

Every head is registered by name (the registry of :mod:`polyfuse.registry`, as fusions)::

    >>> from polyfuse import heads
    >>> heads.available()                      # ['captioning', 'classification', ..., 'vqa', 'zero_shot']
    >>> head = heads.build("vqa", in_dim=256, vocabulary=["yes", "no"])
"""

from typing import Any, Mapping

from polyfuse.heads.base import HEADS, HeadContext, TaskHead
from polyfuse.heads.captioning import CaptioningHead
from polyfuse.heads.classification import ClassificationHead
from polyfuse.heads.contrastive import ContrastiveHead
from polyfuse.heads.generative_vqa import GenerativeVQAHead
from polyfuse.heads.matching import ITMHead
from polyfuse.heads.mlm import MLMHead
from polyfuse.heads.multilabel import MultiLabelClassificationHead
from polyfuse.heads.multitask import MultiTaskHead
from polyfuse.heads.nlvr2 import ImagesAndTextHead
from polyfuse.heads.vqa import AnswerVocabulary, VQAHead
from polyfuse.heads.zero_shot import ZeroShotHead

register = HEADS.register
"""Decorator: ``@register("<name>")`` makes a head buildable by name."""
available = HEADS.available
"""The registered head names, sorted."""
get_class = HEADS.get
"""The head registered under a name; a KeyError listing the valid names otherwise."""


def build(name: str, in_dim: int | None, dims: Mapping[str, int] | None = None, **options: Any) -> TaskHead:
    """Instantiate a registered head: ``build("classification", in_dim=256, num_classes=10)``."""
    return HEADS.build(name, in_dim=in_dim, dims=dims, **options)


__all__ = ["HEADS", "register", "available", "get_class", "build", "TaskHead", "HeadContext", "ClassificationHead",
           "MultiLabelClassificationHead", "ContrastiveHead", "ITMHead", "MLMHead", "VQAHead", "AnswerVocabulary",
           "GenerativeVQAHead", "CaptioningHead", "MultiTaskHead", "ZeroShotHead", "ImagesAndTextHead"]

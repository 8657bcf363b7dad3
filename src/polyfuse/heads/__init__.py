"""Task heads: each owns its loss and metrics (see :class:`TaskHead`).

* classification: :class:`ClassificationHead`, :class:`MultiLabelClassificationHead`,
  :class:`ZeroShotHead` (CLIP prompts, no training)
* retrieval: :class:`ContrastiveHead` (dual-stream, CLIP / SigLIP), :class:`ITMHead` (single-stream)
* VQA: :class:`VQAHead` (answer vocabulary, soft scores), :class:`GenerativeVQAHead`
* captioning: :class:`CaptioningHead` (transformer decoder, greedy / beam search, KV cache)
* pre-training: :class:`MLMHead`, :class:`ITMHead`
* several tasks at once: :class:`MultiTaskHead`
"""

from polyfuse.heads.base import HeadContext, TaskHead
from polyfuse.heads.captioning import CaptioningHead
from polyfuse.heads.classification import ClassificationHead
from polyfuse.heads.contrastive import ContrastiveHead
from polyfuse.heads.generative_vqa import GenerativeVQAHead
from polyfuse.heads.matching import ITMHead
from polyfuse.heads.mlm import MLMHead
from polyfuse.heads.multilabel import MultiLabelClassificationHead
from polyfuse.heads.multitask import MultiTaskHead
from polyfuse.heads.vqa import AnswerVocabulary, VQAHead
from polyfuse.heads.zero_shot import ZeroShotHead

__all__ = ["TaskHead", "HeadContext", "ClassificationHead", "MultiLabelClassificationHead", "ContrastiveHead",
           "ITMHead", "MLMHead", "VQAHead", "AnswerVocabulary", "GenerativeVQAHead", "CaptioningHead",
           "MultiTaskHead", "ZeroShotHead"]

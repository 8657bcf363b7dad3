"""Evaluation metrics computed as the community's reference code computes them.

* :func:`retrieval_recall` -- R@K / mean / median rank, one-to-one or one-to-many (COCO) ground truth.
* :func:`vqa_accuracy`, :func:`normalize_vqa_answer` -- the official VQA evaluation.
* :func:`caption_scores` -- BLEU, METEOR, ROUGE-L, CIDEr-D (SPICE) through pycocoevalcap.

Each has a :class:`torchmetrics.Metric` that accumulates over an evaluation split.
"""

from polyfuse.metrics.captioning import CAPTION_METRICS, CaptionScores, caption_scores
from polyfuse.metrics.retrieval import RetrievalRecall, content_key, retrieval_recall
from polyfuse.metrics.vqa import VQAAccuracy, vqa_accuracy, vqa_question_accuracy
from polyfuse.metrics.vqa_normalization import normalize_vqa_answer

__all__ = ["retrieval_recall", "RetrievalRecall", "content_key", "vqa_accuracy", "vqa_question_accuracy",
           "VQAAccuracy", "normalize_vqa_answer", "caption_scores", "CaptionScores", "CAPTION_METRICS"]

"""A head's raw outputs -> readable predictions (labels, answers, captions, embeddings).

Each function returns a dict of batched values (tensors ``(B, ...)`` or lists of length ``B``);
:func:`unbatch` takes one sample's row of it.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from polyfuse.batch import Batch
from polyfuse.heads import (CaptioningHead, ClassificationHead, ContrastiveHead, GenerativeVQAHead,
                            MultiLabelClassificationHead, MultiTaskHead, VQAHead)
from polyfuse.heads.base import HeadContext, TaskHead

__all__ = ["task_of", "head_predictions", "unbatch"]


def task_of(head: TaskHead) -> str:
    """``classification``, ``multilabel``, ``vqa``, ``generative_vqa``, ``captioning``, ``retrieval``,
    ``multitask`` or ``other``."""
    for kind, task in ((MultiTaskHead, "multitask"), (GenerativeVQAHead, "generative_vqa"),
                       (CaptioningHead, "captioning"), (VQAHead, "vqa"), (ContrastiveHead, "retrieval"),
                       (MultiLabelClassificationHead, "multilabel"), (ClassificationHead, "classification")):
        if isinstance(head, kind):
            return task
    return "other"


def _generate(head: CaptioningHead, fused: Any, context: HeadContext, key: str) -> dict[str, Any]:
    memory, memory_mask = head.memory(fused, context)
    sequences, scores = head.generate(memory, memory_mask)
    return {"task": task_of(head), key: head.decode(sequences), "tokens": sequences, "score": scores}


def head_predictions(head: TaskHead, fused: Any, batch: Batch, context: HeadContext,
                     labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Run ``head`` on a fused batch and read its outputs as predictions.

    Captioning heads generate (their configured greedy / beam search, :meth:`CaptioningHead.generate`)
    instead of teacher forcing, so no target text is needed.
    """
    task = task_of(head)
    if task == "multitask":
        return {"task": task, **{name: head_predictions(sub, fused, batch, context, labels)
                                 for name, sub in head.heads.items()}}
    if task in ("captioning", "generative_vqa"):
        return _generate(head, fused, context, "caption" if task == "captioning" else "answer")
    if task == "retrieval" and head.sources:  # trained on a target (captions beside VQA questions): at
        # prediction time that modality's input is embedded instead, with the same encoder
        embeddings = {m: head.embed(context.encoded[m], m) for m in head.modalities}
        present = {m: context.encoded[m].present_or_full() for m in head.modalities}
        return {"task": task, "embeddings": embeddings, "present": present,
                "logit_scale": head.logit_scale.clamp(max=head.max_log_scale).exp()}
    return read_outputs(head, head(fused, batch, context), labels)


def read_outputs(head: TaskHead, outputs: Any, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Predictions from the outputs of ``head``'s forward pass (not for captioning heads)."""
    task = task_of(head)
    if task == "classification":
        probs = outputs.float().softmax(dim=-1)
        result = {"task": task, "logits": outputs, "probs": probs, "label": probs.argmax(dim=-1)}
        if labels is not None:
            result["label_name"] = [labels[i] for i in result["label"].tolist()]
        return result
    if task == "multilabel":
        probs = outputs.float().sigmoid()
        chosen = [torch.nonzero(row >= head.threshold).flatten().tolist() for row in probs]
        result = {"task": task, "logits": outputs, "probs": probs, "labels": chosen}
        if labels is not None:
            result["label_names"] = [[labels[i] for i in row] for row in chosen]
        return result
    if task == "vqa":
        scores = outputs.float().sigmoid()  # trained with soft-score BCE: one sigmoid per answer
        return {"task": task, "logits": outputs, "scores": scores, "answer": head.predict(outputs),
                "score": scores.max(dim=-1).values}
    if task == "retrieval":
        return {"task": task, "embeddings": dict(outputs["embeddings"]), "present": dict(outputs["present"]),
                "logit_scale": outputs["logit_scale"]}
    return {"task": task, "outputs": outputs}


def unbatch(predictions: Any, index: int) -> Any:
    """Row ``index`` of batched predictions (scalars for ``(B,)`` tensors)."""
    if isinstance(predictions, dict):
        return {key: value if key in ("task", "logit_scale") else unbatch(value, index)
                for key, value in predictions.items()}
    if isinstance(predictions, Tensor):
        row = predictions[index]
        return row.item() if row.dim() == 0 else row
    if isinstance(predictions, list):
        return predictions[index]
    return predictions

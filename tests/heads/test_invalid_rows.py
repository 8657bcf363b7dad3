"""Placeholder rows (``Batch.valid`` False) leave every head's loss and metrics: the loss of a batch
with placeholders equals the loss of its valid rows alone; a batch without a valid row gives 0 with
a graph; metrics see only valid rows."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
import torch
from torchmetrics import MetricCollection

from polyfuse.batch import Batch
from polyfuse.heads import CaptioningHead, ClassificationHead, ContrastiveHead, MultiTaskHead, VQAHead
from polyfuse.heads.base import TaskHead, update_valid_metrics, valid_rows_loss
from polyfuse.losses.masking import select_rows

from . import head_cases as cases

VALID = torch.tensor([True, False, True, True, False, True])
ANSWERS = [["yes"] * 10, ["no"] * 10, ["1"] * 4 + ["0"] * 6, ["0"] * 10, ["yes"] * 3, ["no"] * 8 + ["yes"] * 2]


class SquaredNorm(TaskHead):
    """A head that knows nothing of placeholder rows: the LightningModule's fallback selects rows."""

    def forward(self, fused, batch, context=None):
        return fused.pooled

    def loss(self, outputs, batch):
        return outputs.pow(2).sum(-1).mean()


HEADS = {
    "classification": (partial(ClassificationHead, num_classes=3), "concat"),
    "vqa": (partial(VQAHead, vocabulary=["0", "1", "yes", "no"], dropout=0.0), "concat"),
    "captioning": (partial(CaptioningHead, vocab_size=cases.VOCAB, dim=16, depth=1, heads=2, max_length=8,
                           dropout=0.0, bos_id=cases.CLS, eos_id=cases.SEP, pad_id=cases.PAD), "early"),
    "contrastive": (partial(ContrastiveHead, embed_dim=8), None),
    "siglip": (partial(ContrastiveHead, embed_dim=8, loss="siglip"), None),
    "fallback": (SquaredNorm, "concat"),
    "multitask": (partial(MultiTaskHead, heads={"cls": partial(ClassificationHead, num_classes=3),
                                                "plain": SquaredNorm}), "concat"),
}


def _batch(valid: torch.Tensor | None) -> Batch:
    batch = cases.batch(6, answers=[a if ok else None for a, ok in zip(ANSWERS, VALID.tolist())])
    return replace(batch, valid=valid)


@pytest.mark.parametrize("name", list(HEADS))
def test_loss_with_placeholders_equals_the_loss_of_the_valid_rows(name):
    head, fusion = HEADS[name]
    model = cases.model(head, fusion=fusion)
    batch = _batch(VALID)
    loss = valid_rows_loss(model.head, model(batch).outputs, batch)
    loss = loss["loss"] if isinstance(loss, dict) else loss
    kept = select_rows(batch, VALID)
    reference = model.head.loss(model(kept).outputs, kept)
    reference = reference["loss"] if isinstance(reference, dict) else reference
    torch.testing.assert_close(loss, reference, atol=1e-6, rtol=1e-5)
    none = _batch(torch.zeros(6, dtype=torch.bool))
    zero = valid_rows_loss(model.head, model(none).outputs, none)
    zero = zero["loss"] if isinstance(zero, dict) else zero
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()  # DDP's gradient all-reduce needs a backward on every rank
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_metrics_see_only_valid_rows():
    head, fusion = HEADS["classification"]
    model = cases.model(head, fusion=fusion)
    batch = _batch(VALID)
    metrics: MetricCollection = model.head.make_metrics()
    update_valid_metrics(model.head, metrics, model(batch).outputs, batch)
    kept = select_rows(batch, VALID)
    reference = model.head.make_metrics()
    model.head.update_metrics(reference, model(kept).outputs, kept)
    accuracy = metrics["acc"]
    assert int((accuracy.tp + accuracy.fn).sum()) == int(VALID.sum())  # samples counted: the valid rows
    torch.testing.assert_close(metrics.compute()["acc"], reference.compute()["acc"])
    empty = model.head.make_metrics()
    none = _batch(torch.zeros(6, dtype=torch.bool))
    update_valid_metrics(model.head, empty, model(none).outputs, none)
    assert all(metric.update_count == 0 for metric in empty.values())


def test_image_text_matching_never_pairs_a_placeholder():
    from polyfuse.heads import ITMHead

    model = cases.model(partial(ITMHead, embed_dim=8), fusion="early")
    batch = _batch(VALID)
    outputs = model(batch).outputs
    keep = outputs["keep"]
    assert keep[:6].tolist() == VALID.tolist() and keep[6:].all()  # positives of placeholders are left out
    assert len(outputs["logits"]) - 6 <= int(VALID.sum())  # negatives only for valid anchors
    loss = valid_rows_loss(model.head, outputs, batch)
    assert torch.isfinite(loss["loss"] if isinstance(loss, dict) else loss)
    none = _batch(torch.zeros(6, dtype=torch.bool))
    zero = valid_rows_loss(model.head, model(none).outputs, none)
    zero = zero["loss"] if isinstance(zero, dict) else zero
    assert zero.item() == 0.0 and zero.requires_grad

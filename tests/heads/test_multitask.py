"""MultiTaskHead: weighted loss with per-task terms, per-task metric names, monitor."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from polyfuse.heads import ClassificationHead, ContrastiveHead, MultiTaskHead, VQAHead

from . import head_cases as cases


def _model(weights=None, monitor=None):
    heads = {"classify": partial(ClassificationHead, num_classes=3),
             "retrieval": partial(ContrastiveHead, embed_dim=8),
             "vqa": partial(VQAHead, vocabulary=["yes", "no"])}
    return cases.model(partial(MultiTaskHead, heads=heads, weights=weights, monitor=monitor), fusion="early")


def test_loss_is_the_weighted_sum_and_terms_are_named() -> None:
    model = _model(weights={"classify": 2.0, "vqa": 0.5})
    batch = cases.batch(4, answers=[["yes"] * 10] * 4)
    out = model(batch)
    terms = model.head.loss(out.outputs, batch)
    assert set(terms) == {"loss", "classify/loss", "retrieval/loss", "vqa/loss"}
    expected = 2.0 * terms["classify/loss"] + terms["retrieval/loss"] + 0.5 * terms["vqa/loss"]
    torch.testing.assert_close(terms["loss"], expected)
    cases.assert_all_parameters_get_gradients(model, terms["loss"], ignore=("missing", "fusion.out"))


def test_metrics_are_prefixed_per_task() -> None:
    model = _model().eval()
    batch = cases.batch(4, answers=[["yes"] * 10] * 4)
    metrics = model.head.make_metrics().clone(prefix="val/")
    with torch.no_grad():
        model.head.update_metrics(metrics, model(batch).outputs, batch)
    names = set(metrics.compute())
    assert {"val/classify/acc", "val/classify/f1_macro", "val/vqa/vqa_acc", "val/retrieval/rsum",
            "val/retrieval/image_to_text/R@1"} <= names
    metrics.reset()


def test_monitor_defaults_to_the_first_task() -> None:
    assert _model().head.monitor == "classify/acc" and _model().head.monitor_mode == "max"
    assert _model(monitor="retrieval/rsum").head.monitor == "retrieval/rsum"
    with pytest.raises(KeyError, match="names no task"):
        _model(monitor="caption/CIDEr")
    with pytest.raises(KeyError, match="unknown tasks"):
        _model(weights={"nope": 1.0})

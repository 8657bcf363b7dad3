"""ClassificationHead keeps its behaviour under the extended head protocol."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from polyfuse.heads import ClassificationHead

from . import head_cases as cases


def test_logits_loss_metrics_and_gradients() -> None:
    model = cases.model(partial(ClassificationHead, num_classes=3, label_smoothing=0.1), fusion="concat")
    batch = cases.batch()
    out = model(batch)
    assert out.outputs.shape == (6, 3)
    loss = model.head.loss(out.outputs, batch)
    torch.testing.assert_close(loss, F.cross_entropy(out.outputs, batch.targets["label"], label_smoothing=0.1))
    metrics = model.head.make_metrics()
    model.head.update_metrics(metrics, out.outputs, batch)
    assert set(metrics.compute()) == {"acc", "f1_macro"}
    cases.assert_all_parameters_get_gradients(model, loss)


def test_needs_a_fusion() -> None:
    try:
        ClassificationHead(in_dim=None, num_classes=3)
    except ValueError as error:
        assert "fusion" in str(error)
    else:
        raise AssertionError("a head without fused input must say it needs a fusion")

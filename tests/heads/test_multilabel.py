"""MultiLabelClassificationHead: the four MM-IMDb F1 scores equal scikit-learn's."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import f1_score

from polyfuse.batch import Batch, ModalityInput
from polyfuse.fusion.base import FusionOutput
from polyfuse.heads import MultiLabelClassificationHead


def test_f1_scores_equal_sklearn() -> None:
    torch.manual_seed(0)
    head = MultiLabelClassificationHead(in_dim=8, num_labels=5)
    metrics = head.make_metrics()
    all_logits, all_labels = [], []
    for _ in range(3):
        labels = (torch.rand(7, 5) < 0.4).long()
        batch = Batch({"x": ModalityInput(torch.zeros(7, 1))}, {"labels": labels})
        logits = head(FusionOutput(pooled=torch.randn(7, 8)), batch)
        head.update_metrics(metrics, logits, batch)
        all_logits.append(logits.detach())
        all_labels.append(labels)
    predicted = (torch.cat(all_logits).sigmoid() > 0.5).long().numpy()
    truth = torch.cat(all_labels).numpy()
    values = metrics.compute()
    for average in ("micro", "macro", "weighted", "samples"):
        expected = f1_score(truth, predicted, average=average, zero_division=0)
        assert values[f"f1_{average}"].item() == pytest.approx(expected, abs=1e-6), average


def test_bce_loss_and_target_checks() -> None:
    head = MultiLabelClassificationHead(in_dim=4, num_labels=3)
    logits = torch.randn(2, 3)
    labels = torch.tensor([[1, 0, 1], [0, 0, 0]])
    batch = Batch({}, {"labels": labels})
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    torch.testing.assert_close(head.loss(logits, batch), expected)
    with pytest.raises(KeyError, match="multi-hot"):
        head.loss(logits, Batch({}, {}))

"""sequence_cross_entropy: token-level CE with label smoothing that ignores padding."""

from __future__ import annotations

import torch

from polyfuse.losses import sequence_cross_entropy


def test_ignores_padding_and_matches_manual_label_smoothing() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, 4, -100], [0, -100, -100]])
    eps = 0.1
    logp = logits.log_softmax(-1)
    terms = []
    for b, t in [(0, 0), (0, 1), (1, 0)]:
        gold = targets[b, t]
        terms.append(-(1 - eps) * logp[b, t, gold] - eps / 5 * logp[b, t].sum())
    expected = torch.stack(terms).mean()
    torch.testing.assert_close(sequence_cross_entropy(logits, targets, label_smoothing=eps), expected)


def test_padding_values_do_not_matter() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 6)
    targets = torch.tensor([[2, 3, -100, -100]])
    changed = logits.clone()
    changed[0, 2:] = 100.0
    torch.testing.assert_close(sequence_cross_entropy(logits, targets), sequence_cross_entropy(changed, targets))

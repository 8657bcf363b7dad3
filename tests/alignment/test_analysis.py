"""Analysis: canonical correlations between two encoders' embeddings, fitted and held out."""

from __future__ import annotations

import pytest
import torch

from polyfuse.alignment import canonical_correlations, encoder_correlations, pooled_embeddings
from polyfuse.batch import Batch, Encoded, ModalityInput

from .views import correlated_views


class Identity:
    """A 'model' whose encoders return the raw vectors (one token each)."""

    def encode(self, batch: Batch) -> dict[str, Encoded]:
        return {m: Encoded(x.values.float(), present=x.present) for m, x in batch.inputs.items()}


def batches(x: torch.Tensor, y: torch.Tensor, size: int = 100, absent_every: int = 0) -> list[Batch]:
    out = []
    for start in range(0, x.shape[0], size):
        xs, ys = x[start:start + size], y[start:start + size]
        present = torch.ones(xs.shape[0], dtype=torch.bool)
        if absent_every:
            present[::absent_every] = False
            ys = torch.where(present[:, None], ys, torch.full_like(ys, float("nan")))
        out.append(Batch(inputs={"image": ModalityInput(xs), "audio": ModalityInput(ys, present=present)}))
    return out


def test_heldout_correlations_recover_the_population_values():
    x, y = correlated_views(n=4000, seed=11)
    truth = canonical_correlations(x, y, k=3)
    report = encoder_correlations(Identity(), batches(x, y), "image", "audio", k=3, reg=0.0)
    assert report.samples == 4000
    torch.testing.assert_close(report.heldout, truth, atol=0.03, rtol=0)
    assert (report.fitted >= report.heldout - 0.02).all()


def test_absent_samples_are_left_out():
    x, y = correlated_views(n=1000, seed=12)
    embeddings, presence = pooled_embeddings(Identity(), batches(x, y, absent_every=4), ["image", "audio"])
    assert embeddings["image"].shape == (1000, 5) and int(presence["audio"].sum()) == 750
    report = encoder_correlations(Identity(), batches(x, y, absent_every=4), "image", "audio", k=2)
    assert report.samples == 750 and torch.isfinite(report.heldout).all()


def test_errors():
    x, y = correlated_views(n=100)
    with pytest.raises(ValueError, match="heldout_fraction"):
        encoder_correlations(Identity(), batches(x, y), "image", "audio", heldout_fraction=1.0)
    with pytest.raises(KeyError, match="'text'"):
        encoder_correlations(Identity(), batches(x, y), "image", "text")


def test_fit_on_one_set_and_score_on_another():
    x, y = correlated_views(n=3000, seed=13)
    truth = canonical_correlations(x, y, k=2)
    report = encoder_correlations(Identity(), batches(x[:2000], y[:2000]), "image", "audio", k=2,
                                  heldout=batches(x[2000:], y[2000:]))
    assert report.samples == 3000
    torch.testing.assert_close(report.heldout, truth, atol=0.04, rtol=0)

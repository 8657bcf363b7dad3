"""GCCA (MAX-VAR) and sum-of-pairwise objectives: the two-view identity with CCA, gradcheck."""

from __future__ import annotations

import pytest
import torch

from polyfuse.alignment import canonical_correlations, deep_cca_loss, gcca_eigenvalues, gcca_loss, pairwise_cca_loss

from .views import correlated_views


def test_two_view_gcca_is_cca():
    """For two views the eigenvalues of P1 + P2 are 1 +- rho: loss = -(r + sum of top-r correlations)."""
    x, y = correlated_views(n=300, seed=6)
    rho = canonical_correlations(x, y)
    for rank in (1, 3):
        expected = -(rank + rho[:rank].sum())
        torch.testing.assert_close(gcca_loss([x, y], rank, reg=0.0), expected, atol=1e-8, rtol=0)
    eigenvalues = gcca_eigenvalues([x, y], reg=0.0)
    torch.testing.assert_close(eigenvalues[:4], 1 + rho, atol=1e-8, rtol=0)


def test_shared_signal_in_every_view_gives_top_eigenvalue_near_number_of_views():
    generator = torch.Generator().manual_seed(0)
    shared = torch.randn(200, 1, generator=generator, dtype=torch.float64)
    views = [torch.cat([shared * 3, torch.randn(200, 2, generator=generator, dtype=torch.float64)], 1)
             for _ in range(3)]
    top = gcca_eigenvalues(views, reg=1e-6)[0].item()
    assert 2.8 < top <= 3.0 + 1e-9


def test_pairwise_is_sum_of_dcca():
    views = [correlated_views(n=100, dx=d, dy=3, seed=s)[0] for s, d in ((7, 4), (8, 5), (9, 3))]
    expected = sum(deep_cca_loss(views[i], views[j]) for i, j in ((0, 1), (0, 2), (1, 2)))
    torch.testing.assert_close(pairwise_cca_loss(views), expected)


def test_gradcheck_float64():
    generator = torch.Generator().manual_seed(3)
    views = [torch.randn(10, 2, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(lambda *v: gcca_loss(v, rank=2, reg=1e-2), tuple(views))


def test_errors():
    x, _ = correlated_views(n=20)
    with pytest.raises(ValueError, match="at least 2 views"):
        gcca_loss([x], 1)
    with pytest.raises(ValueError, match="same number of samples"):
        gcca_loss([x, x[:10]], 1)

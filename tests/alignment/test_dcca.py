"""Deep CCA loss: value equals minus the sum of independently computed canonical correlations; gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyfuse.alignment import DeepCCALoss, deep_cca_loss

from .test_cca import eigen_correlations
from .views import correlated_views


@pytest.mark.parametrize(("k", "reg"), [(None, 1e-3), (2, 1e-3), (None, 0.5)])
def test_loss_is_minus_sum_of_canonical_correlations(k, reg):
    x, y = correlated_views(n=200, seed=4)
    expected = -eigen_correlations(x.numpy(), y.numpy(), reg)[:k].sum()
    np.testing.assert_allclose(deep_cca_loss(x, y, k=k, reg=reg).item(), expected, atol=1e-10)
    assert DeepCCALoss(k=k, reg=reg)(x, y).item() == pytest.approx(expected, abs=1e-10)


def test_separate_ridges_per_view():
    x, y = correlated_views(n=50, seed=5)
    a = deep_cca_loss(x, y, reg=(1e-3, 2.0))
    assert not torch.isclose(a, deep_cca_loss(x, y, reg=1e-3))
    assert not torch.isclose(a, deep_cca_loss(x, y, reg=2.0))


def test_gradcheck_float64():
    generator = torch.Generator().manual_seed(0)
    h1 = torch.randn(12, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    h2 = (h1.detach() @ torch.randn(3, 3, generator=generator, dtype=torch.float64)
          + torch.randn(12, 3, generator=generator, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: deep_cca_loss(a, b, reg=1e-2), (h1, h2))
    assert torch.autograd.gradcheck(lambda a, b: deep_cca_loss(a, b, k=2, reg=1e-2), (h1, h2))


def test_gradient_is_finite_with_repeated_correlations():
    """Two identical views have all correlations ~1 (repeated singular values): still a finite gradient."""
    generator = torch.Generator().manual_seed(1)
    h = torch.randn(64, 8, generator=generator, requires_grad=True)
    loss = deep_cca_loss(h, h * 2.0 + 1.0, reg=1e-4)
    loss.backward()
    assert loss.item() == pytest.approx(-8.0, abs=1e-2)
    assert torch.isfinite(h.grad).all()


def test_gradient_ascent_increases_correlation():
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(256, 4, generator=generator), torch.randn(256, 4, generator=generator)
    torch.manual_seed(0)
    f, g = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    shared = torch.randn(256, 1, generator=generator)
    x, y = x + shared, y + shared  # one shared direction to find
    optimizer = torch.optim.SGD([*f.parameters(), *g.parameters()], lr=0.1)
    start = -deep_cca_loss(f(x), g(y), k=1).item()
    for _ in range(50):
        optimizer.zero_grad()
        deep_cca_loss(f(x), g(y), k=1).backward()
        optimizer.step()
    assert -deep_cca_loss(f(x), g(y), k=1).item() > max(start + 0.15, 0.8)  # population value: 16/20

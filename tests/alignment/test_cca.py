"""Linear CCA: parity with scikit-learn's CCA and with an independent eigen-solution, invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cross_decomposition import CCA

from polyfuse.alignment import LinearCCA, canonical_correlations

from .views import correlated_views


def eigen_correlations(x: np.ndarray, y: np.ndarray, reg: float = 0.0) -> np.ndarray:
    """Canonical correlations as sqrt(eig(Sxx^-1 Sxy Syy^-1 Syx)), descending (textbook formula)."""
    x, y = x - x.mean(0), y - y.mean(0)
    n = x.shape[0]
    sxx = x.T @ x / (n - 1) + reg * np.eye(x.shape[1])
    syy = y.T @ y / (n - 1) + reg * np.eye(y.shape[1])
    sxy = x.T @ y / (n - 1)
    values = np.linalg.eigvals(np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)).real
    return np.sqrt(np.clip(np.sort(values)[::-1][: min(x.shape[1], y.shape[1])], 0, None))


def test_matches_sklearn_cca():
    x, y = correlated_views()
    ours = LinearCCA(k=3).fit(x, y)
    reference = CCA(n_components=3, max_iter=5000, tol=1e-12).fit(x.numpy(), y.numpy())
    u, v = reference.transform(x.numpy(), y.numpy())
    sklearn_rho = np.array([np.corrcoef(u[:, i], v[:, i])[0, 1] for i in range(3)])
    np.testing.assert_allclose(ours.correlations_.numpy(), sklearn_rho, atol=1e-6)
    # the canonical variates agree up to sign
    ou, ov = ours.transform(x, y)
    for i in range(3):
        assert abs(np.corrcoef(ou[:, i].numpy(), u[:, i])[0, 1]) > 0.9999
        assert abs(np.corrcoef(ov[:, i].numpy(), v[:, i])[0, 1]) > 0.9999


@pytest.mark.parametrize("reg", [0.0, 0.3])
def test_matches_eigen_formula(reg):
    x, y = correlated_views(n=300, seed=1)
    np.testing.assert_allclose(canonical_correlations(x, y, reg=reg).numpy(),
                               eigen_correlations(x.numpy(), y.numpy(), reg), atol=1e-10)


def test_projections_whiten_and_diagonalise():
    x, y = correlated_views(n=500, seed=2)
    cca = LinearCCA().fit(x, y)
    u, v = cca.transform(x, y)
    n = x.shape[0]
    eye = torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(u.T @ u / (n - 1), eye, atol=1e-8, rtol=0)
    torch.testing.assert_close(v.T @ v / (n - 1), eye, atol=1e-8, rtol=0)
    torch.testing.assert_close(u.T @ v / (n - 1), torch.diag(cca.correlations_), atol=1e-8, rtol=0)
    torch.testing.assert_close(cca.score(x, y), cca.correlations_, atol=1e-8, rtol=0)


def test_invariant_to_invertible_linear_maps_and_float32_input():
    x, y = correlated_views(n=400, seed=3)
    generator = torch.Generator().manual_seed(0)
    mixed = x @ torch.randn(5, 5, generator=generator, dtype=torch.float64) + 7.0
    torch.testing.assert_close(canonical_correlations(mixed, y), canonical_correlations(x, y), atol=1e-8, rtol=0)
    torch.testing.assert_close(LinearCCA().fit(x.float(), y.float()).correlations_, canonical_correlations(x, y),
                               atol=1e-5, rtol=0)


def test_errors_name_the_problem():
    x, y = correlated_views(n=10)
    with pytest.raises(ValueError, match="same number of samples"):
        canonical_correlations(x, y[:5])
    with pytest.raises(ValueError, match="singular"):
        canonical_correlations(x[:3], y[:3])  # 3 samples, 5 dimensions, no ridge
    with pytest.raises(RuntimeError, match="before fit"):
        LinearCCA().transform(x, y)

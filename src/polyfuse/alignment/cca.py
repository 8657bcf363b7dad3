"""Linear canonical correlation analysis in closed form, and the whitened cross-covariance it rests on.

Hotelling, "Relations between two sets of variates", Biometrika 1936. For centred views
``X (N, Dx)``, ``Y (N, Dy)`` with regularised covariances ``Sxx = X'X/(N-1) + rx I``,
``Syy = Y'Y/(N-1) + ry I`` and cross-covariance ``Sxy = X'Y/(N-1)``, the canonical correlations are
the singular values of the whitened cross-covariance ``T = Sxx^{-1/2} Sxy Syy^{-1/2}``.

We whiten with Cholesky factors instead of symmetric square roots: with ``Sxx = Lx Lx'``,
``Lx^{-1} Sxx^{1/2}`` is orthogonal, so ``Lx^{-1} Sxy Ly^{-T}`` has the same singular values as
``T``. Cholesky and triangular solves have gradients without the ``1/(lambda_i - lambda_j)`` terms
of an eigendecomposition, which is what makes the Deep CCA loss (:mod:`polyfuse.alignment.dcca`)
differentiable in a numerically stable way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Regularisation", "covariances", "whitened_cross_covariance", "canonical_correlations", "LinearCCA"]

Regularisation = float | tuple[float, float]


def _pair(reg: Regularisation) -> tuple[float, float]:
    if isinstance(reg, (tuple, list)):
        if len(reg) != 2:
            raise ValueError(f"CCA regularisation must be a float or a pair (rx, ry), got {reg!r}")
        return float(reg[0]), float(reg[1])
    return float(reg), float(reg)


def _check_views(x: Tensor, y: Tensor) -> None:
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"CCA views must be (N, D) matrices, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CCA views must have the same number of samples, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError(f"CCA needs at least 2 samples, got {x.shape[0]}")


def covariances(x: Tensor, y: Tensor, reg: Regularisation = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """``(Sxx + rx I, Syy + ry I, Sxy)`` of the centred views ``x (N, Dx)``, ``y (N, Dy)``."""
    _check_views(x, y)
    rx, ry = _pair(reg)
    n = x.shape[0]
    xc, yc = x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)
    eye_x = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    eye_y = torch.eye(y.shape[1], dtype=y.dtype, device=y.device)
    sxx = xc.T @ xc / (n - 1) + rx * eye_x
    syy = yc.T @ yc / (n - 1) + ry * eye_y
    sxy = xc.T @ yc / (n - 1)
    return sxx, syy, sxy


def _cholesky(matrix: Tensor, view: str) -> Tensor:
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info.max()) > 0:
        raise ValueError(f"CCA: the covariance of view {view} is singular (more dimensions than samples, or "
                         f"constant features); increase the regularisation `reg` or the batch size")
    return factor


def whitened_cross_covariance(x: Tensor, y: Tensor, reg: Regularisation = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """``T = Lx^{-1} Sxy Ly^{-T}`` ``(Dx, Dy)`` and the Cholesky factors ``Lx``, ``Ly``.

    The singular values of ``T`` are the canonical correlations of ``x (N, Dx)`` and ``y (N, Dy)``.
    """
    sxx, syy, sxy = covariances(x, y, reg)
    lx, ly = _cholesky(sxx, "x"), _cholesky(syy, "y")
    left = torch.linalg.solve_triangular(lx, sxy, upper=False)  # Lx^{-1} Sxy
    t = torch.linalg.solve_triangular(ly, left.T, upper=False).T  # Lx^{-1} Sxy Ly^{-T}
    return t, lx, ly


def canonical_correlations(x: Tensor, y: Tensor, k: int | None = None, reg: Regularisation = 0.0) -> Tensor:
    """The top-``k`` canonical correlations ``(k,)`` of ``x (N, Dx)`` and ``y (N, Dy)``, descending."""
    t, _, _ = whitened_cross_covariance(x, y, reg)
    values = torch.linalg.svdvals(t)
    return values if k is None else values[:k]


@dataclass
class LinearCCA:
    """Closed-form linear CCA, for evaluation and probing (not a training objective).

    ``fit(x, y)`` finds projections ``A (Dx, k)``, ``B (Dy, k)`` with ``A' Sxx A = B' Syy B = I`` and
    ``A' Sxy B = diag(rho)``, ``rho`` the canonical correlations in descending order. Computed in
    float64 via the Cholesky-whitened SVD (see the module docstring). Hotelling (1936).

    Rows with any absent view must be removed by the caller (CCA needs paired samples).

    Args:
        k: number of canonical pairs (default ``min(Dx, Dy)``).
        reg: ridge added to each covariance diagonal, a float or ``(rx, ry)``.
    """

    k: int | None = None
    reg: Regularisation = 0.0

    def fit(self, x: Tensor, y: Tensor) -> "LinearCCA":
        x64, y64 = x.detach().double(), y.detach().double()
        t, lx, ly = whitened_cross_covariance(x64, y64, self.reg)
        u, s, vh = torch.linalg.svd(t, full_matrices=False)
        k = min(x.shape[1], y.shape[1]) if self.k is None else min(self.k, x.shape[1], y.shape[1])
        self.x_mean_, self.y_mean_ = x64.mean(0), y64.mean(0)
        # a_i = Lx^{-T} u_i, b_i = Ly^{-T} v_i
        self.x_weights_ = torch.linalg.solve_triangular(lx.T, u[:, :k], upper=True)
        self.y_weights_ = torch.linalg.solve_triangular(ly.T, vh[:k].T, upper=True)
        self.correlations_ = s[:k]
        return self

    def transform(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Canonical variates ``(N, k)`` of each view (float64)."""
        if not hasattr(self, "x_weights_"):
            raise RuntimeError("LinearCCA.transform called before fit")
        return (x.detach().double() - self.x_mean_) @ self.x_weights_, \
            (y.detach().double() - self.y_mean_) @ self.y_weights_

    def score(self, x: Tensor, y: Tensor) -> Tensor:
        """Correlation ``(k,)`` of each pair of canonical variates on (held-out) data ``x``, ``y``."""
        u, v = self.transform(x, y)
        u, v = u - u.mean(0), v - v.mean(0)
        return (u * v).sum(0) / (u.norm(dim=0) * v.norm(dim=0)).clamp_min(1e-12)

"""Correlation objectives for more than two views: generalised CCA (MAX-VAR) and sum of pairwise CCA.

**GCCA** (Horst, 1961; Carroll, 1968; deep form: Benton, Khayrallah, Gujral, Reisinger, Zhang &
Arora, "Deep Generalized Canonical Correlation Analysis", RepL4NLP 2019, arXiv 2017). Find a shared
representation ``G (N, r)``, ``G'G = I``, and per-view maps ``U_j`` minimising
``sum_j ||G - X_j U_j||_F^2``. With the view projectors

    P_j = X_j (X_j'X_j/(N-1) + r_j I)^{-1} X_j' / (N-1)      (N, N), centred X_j,

``G`` is the top-``r`` eigenvectors of ``M = sum_j P_j`` and the objective equals
``J r - (sum of the top-r eigenvalues of M)``. We minimise ``-(sum of the top-r eigenvalues)``.
For two views the eigenvalues of ``P_1 + P_2`` are ``1 +- rho_i``, so the loss is
``-(r + sum of the top-r canonical correlations)``: GCCA generalises CCA.

Gradients: ``P_j`` via a Cholesky solve, eigenvalues via :func:`torch.linalg.eigvalsh`, whose
gradient ``V diag(g) V'`` is stable (no eigenvalue-gap terms).

**Pairwise**: ``sum_{i<j} deep_cca_loss(X_i, X_j)``, the "sum of correlations" multi-view
extension (Kettenring, "Canonical analysis of several sets of variables", Biometrika 1971).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from polyfuse.alignment.dcca import deep_cca_loss

__all__ = ["view_projector", "gcca_eigenvalues", "gcca_loss", "pairwise_cca_loss"]


def view_projector(x: Tensor, reg: float = 1e-3) -> Tensor:
    """The regularised projector ``P = X (X'X/(N-1) + reg I)^{-1} X'/(N-1)`` ``(N, N)`` of centred ``x (N, D)``."""
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"GCCA views must be (N, D) with N >= 2, got shape {tuple(x.shape)}")
    n = x.shape[0]
    xc = x - x.mean(0, keepdim=True)
    gram = xc.T @ xc / (n - 1) + reg * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info.max()) > 0:
        raise ValueError("GCCA: a view's covariance is singular; increase `reg` or the batch size")
    return xc @ torch.cholesky_solve(xc.T, factor) / (n - 1)


def gcca_eigenvalues(views: Sequence[Tensor], reg: float = 1e-3) -> Tensor:
    """Eigenvalues ``(N,)`` of ``M = sum_j P_j``, descending, for views ``(N, D_j)``."""
    if len(views) < 2:
        raise ValueError(f"GCCA needs at least 2 views, got {len(views)}")
    if len({v.shape[0] for v in views}) != 1:
        raise ValueError(f"GCCA views must have the same number of samples, got {[v.shape[0] for v in views]}")
    total = sum(view_projector(view, reg) for view in views)
    total = 0.5 * (total + total.T)  # exact symmetry for eigvalsh
    return torch.linalg.eigvalsh(total).flip(0)


def gcca_loss(views: Sequence[Tensor], rank: int, reg: float = 1e-3) -> Tensor:
    """``-(sum of the top-rank eigenvalues of sum_j P_j)`` (scalar), the MAX-VAR GCCA objective."""
    if rank < 1:
        raise ValueError(f"GCCA rank must be >= 1, got {rank}")
    return -gcca_eigenvalues(views, reg)[:rank].sum()


def pairwise_cca_loss(views: Sequence[Tensor], k: int | None = None, reg: float = 1e-3) -> Tensor:
    """``sum_{i<j} deep_cca_loss(views[i], views[j])`` (scalar)."""
    if len(views) < 2:
        raise ValueError(f"pairwise CCA needs at least 2 views, got {len(views)}")
    losses = [deep_cca_loss(views[i], views[j], k, reg) for i in range(len(views)) for j in range(i + 1, len(views))]
    return torch.stack(losses).sum()

"""The Deep CCA loss: minus the total canonical correlation between two batches of embeddings.

Andrew, Arora, Bilmes & Livescu, "Deep Canonical Correlation Analysis", ICML 2013.

For two networks' outputs ``H1 (N, o)``, ``H2 (N, o)`` on paired samples, with regularised
covariances ``S11 = H1'H1/(N-1) + r1 I``, ``S22 = ... + r2 I`` and ``S12 = H1'H2/(N-1)`` (centred),

    corr(H1, H2) = sum of the top-k singular values of T = S11^{-1/2} S12 S22^{-1/2}

(``k = o``: the trace norm ``||T||_*``). The loss is ``-corr``. Gradients: ``T`` is formed with
Cholesky factors (see :mod:`polyfuse.alignment.cca`) and the singular values with
:func:`torch.linalg.svdvals`, whose gradient ``U diag(g) V'`` has no ``1/(s_i - s_j)`` terms; so
the gradient is stable even when correlations coincide, and it passes ``gradcheck`` in float64.
"""

from __future__ import annotations

from torch import Tensor, nn

from polyfuse.alignment.cca import Regularisation, canonical_correlations

__all__ = ["deep_cca_loss", "DeepCCALoss"]


def deep_cca_loss(h1: Tensor, h2: Tensor, k: int | None = None, reg: Regularisation = 1e-3) -> Tensor:
    """``-(sum of the top-k canonical correlations)`` of ``h1 (N, o1)`` and ``h2 (N, o2)`` (scalar).

    ``reg`` is the ridge ``(r1, r2)`` (or one float for both) added to each covariance; it keeps
    the loss finite when ``N`` is not much larger than ``o``.
    """
    return -canonical_correlations(h1, h2, k=k, reg=reg).sum()


class DeepCCALoss(nn.Module):
    """Module form of :func:`deep_cca_loss`: ``loss(h1 (N, o1), h2 (N, o2)) -> scalar``.

    Andrew et al. (2013). Only paired rows may be passed: drop samples where either modality is
    absent before calling (missing modalities have no canonical variate).

    Args:
        k: number of canonical correlations summed (default all, ``min(o1, o2)``).
        reg: covariance ridge, a float or ``(r1, r2)``.
    """

    def __init__(self, k: int | None = None, reg: Regularisation = 1e-3) -> None:
        super().__init__()
        self.k, self.reg = k, reg

    def forward(self, h1: Tensor, h2: Tensor) -> Tensor:
        return deep_cca_loss(h1, h2, self.k, self.reg)

    def extra_repr(self) -> str:
        return f"k={self.k}, reg={self.reg}"

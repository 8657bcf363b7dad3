"""Correlation-based alignment of modalities: linear CCA, Deep CCA / DCCAE, GCCA, and analysis tools.

>>> from polyfuse.alignment import LinearCCA, deep_cca_loss, gcca_loss
>>> LinearCCA(k=5).fit(x, y).correlations_      # closed form, for probing
>>> loss = deep_cca_loss(h1, h2, reg=1e-3)      # -(sum of canonical correlations), differentiable

As a training objective from config: ``model/objective@model.objectives.dcca=dcca`` (see
``docs/alignment.md``); as an analysis tool: ``python -m polyfuse.alignment.report RUN_DIR``.
"""

from polyfuse.alignment.analysis import CorrelationReport, encoder_correlations, pooled_embeddings
from polyfuse.alignment.cca import LinearCCA, canonical_correlations, covariances, whitened_cross_covariance
from polyfuse.alignment.dcca import DeepCCALoss, deep_cca_loss
from polyfuse.alignment.gcca import gcca_eigenvalues, gcca_loss, pairwise_cca_loss, view_projector
from polyfuse.alignment.objective import CorrelationObjective

__all__ = [
    "LinearCCA", "canonical_correlations", "covariances", "whitened_cross_covariance", "DeepCCALoss",
    "deep_cca_loss", "gcca_eigenvalues", "gcca_loss", "pairwise_cca_loss", "view_projector",
    "CorrelationObjective", "CorrelationReport", "encoder_correlations", "pooled_embeddings",
]

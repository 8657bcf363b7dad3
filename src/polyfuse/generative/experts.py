"""Per-modality Gaussian experts and the two ways of combining them into a joint posterior.

* **Product of experts** (MVAE; Wu & Goodman, "Multimodal Generative Models for Scalable Weakly-
  Supervised Learning", NeurIPS 2018): ``q(z|X) ∝ p(z) prod_{m present} q(z|x_m)``. A product of
  Gaussians is Gaussian with precision ``T = sum_i T_i`` and mean ``sum_i T_i mu_i / T``.
  A missing modality simply contributes no factor: the posterior is the product of the remaining
  experts (and the prior expert ``N(0, I)``), with no imputation.
* **Mixture of experts** (MMVAE; Shi, Siddharth, Paige & Torr, "Variational Mixture-of-Experts
  Autoencoders for Multi-Modal Deep Generative Models", NeurIPS 2019):
  ``q(z|X) = 1/|P| sum_{m in P} q(z|x_m)`` over the present modalities ``P``.

Shapes: experts are stacked on a leading axis: ``mu, logvar (M, B, K)``, ``present (M, B)`` bool.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from polyfuse.generative.gaussian import LOGVAR_RANGE, gaussian_log_prob

__all__ = ["GaussianExpert", "product_of_experts", "mixture_log_prob"]


class GaussianExpert(nn.Module):
    """An inference network ``x (B, D) -> (mu, logvar) (B, K)``: LayerNorm, MLP, two linear heads.

    Kingma & Welling (2014); one per modality in a multimodal VAE (Wu & Goodman, 2018). The
    log-variance is clamped to :data:`~polyfuse.generative.gaussian.LOGVAR_RANGE`. Rows of absent
    samples are computed but must be ignored by the caller (``present`` in :func:`product_of_experts`).

    Args:
        in_dim: input width ``D``. latent_dim: ``K``. hidden: MLP width.
    """

    def __init__(self, in_dim: int, latent_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU())
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.body(x)
        return self.mu(hidden), self.logvar(hidden).clamp(*LOGVAR_RANGE)


def product_of_experts(mu: Tensor, logvar: Tensor, present: Tensor, prior: bool = True) -> tuple[Tensor, Tensor]:
    """Precision-weighted product of the present experts (and the prior ``N(0, I)`` when ``prior``).

    Args:
        mu, logvar: ``(M, B, K)``. present: ``(M, B)`` bool; absent experts are excluded with
            ``torch.where``, so their (garbage) values never reach the result.
        prior: include the standard-normal prior expert (as MVAE does); without it a sample with no
            present expert gets ``N(0, I)``.

    Returns:
        ``(mu, logvar)`` of the product, ``(B, K)``.
    """
    if mu.shape != logvar.shape or mu.shape[:2] != present.shape:
        raise ValueError(f"product_of_experts: mu {tuple(mu.shape)}, logvar {tuple(logvar.shape)} and present "
                         f"{tuple(present.shape)} must be (M, B, K), (M, B, K), (M, B)")
    keep = present[..., None]
    zero = torch.zeros((), dtype=mu.dtype, device=mu.device)
    precision = torch.where(keep, torch.exp(-logvar), zero)
    weighted = torch.where(keep, mu, zero) * precision
    total_precision = precision.sum(0)
    if prior:
        total_precision = total_precision + 1.0  # the N(0, I) expert: precision 1, mean 0
    else:
        total_precision = torch.where(keep.any(0), total_precision, torch.ones_like(total_precision))
    return weighted.sum(0) / total_precision, -torch.log(total_precision)


def mixture_log_prob(z: Tensor, mu: Tensor, logvar: Tensor, present: Tensor) -> Tensor:
    """``log (1/|P| sum_{m in P} N(z; mu_m, exp(logvar_m)))`` ``(..., B)`` over the present experts ``P``.

    Args:
        z: ``(..., B, K)`` points (leading axes broadcast against the experts).
        mu, logvar: ``(M, B, K)``. present: ``(M, B)``; a sample with no present expert gets ``-inf``.
    """
    log_probs = gaussian_log_prob(z.unsqueeze(-3), mu, logvar)  # (..., M, B)
    log_probs = torch.where(present, log_probs, torch.full((), -math.inf, dtype=log_probs.dtype,
                                                           device=log_probs.device))
    count = present.sum(0).clamp_min(1).to(log_probs.dtype)
    return torch.logsumexp(log_probs, dim=-2) - torch.log(count)

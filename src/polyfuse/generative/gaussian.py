"""Diagonal Gaussian helpers shared by the multimodal VAEs: sampling, log-density, KL to the prior.

Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014. A diagonal Gaussian is a pair
``(mu, logvar)`` of tensors ``(..., K)``; every function reduces over the last dimension.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LOGVAR_RANGE", "reparameterize", "gaussian_log_prob", "kl_to_standard_normal"]

# log-variances are clamped to this range where they are produced (exp(+-8): std from 0.018 to 55),
# so precisions and densities stay finite in float32.
LOGVAR_RANGE = (-8.0, 8.0)


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A sample ``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``, differentiable in ``mu`` and ``logvar``."""
    eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_log_prob(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """``log N(x; mu, diag(exp(logvar)))``, summed over the last dimension: ``(...)``."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` in closed form, summed over the last dimension: ``(...)``."""
    return 0.5 * (torch.exp(logvar) + mu.pow(2) - 1.0 - logvar).sum(-1)

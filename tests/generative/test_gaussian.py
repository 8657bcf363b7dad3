"""Gaussian helpers against torch.distributions."""

from __future__ import annotations

import torch
from torch.distributions import Normal, kl_divergence

from polyfuse.generative import gaussian_log_prob, kl_to_standard_normal, reparameterize


def test_log_prob_and_kl_match_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mu, logvar, x = (torch.randn(4, 6, 5, generator=generator, dtype=torch.float64) for _ in range(3))
    q = Normal(mu, torch.exp(0.5 * logvar))
    torch.testing.assert_close(gaussian_log_prob(x, mu, logvar), q.log_prob(x).sum(-1))
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar),
                               kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1))


def test_reparameterize_moments_and_gradient():
    mu = torch.full((20000, 2), 3.0, requires_grad=True)
    logvar = torch.full((20000, 2), 2 * torch.log(torch.tensor(0.5)).item(), requires_grad=True)
    z = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(1))
    assert abs(z.mean().item() - 3.0) < 0.02 and abs(z.std().item() - 0.5) < 0.02
    z.sum().backward()
    assert torch.all(mu.grad == 1) and torch.isfinite(logvar.grad).all() and logvar.grad.abs().sum() > 0

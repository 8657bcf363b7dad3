"""Product and mixture of experts: analytic products, missing modalities, mixture density."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from polyfuse.generative import GaussianExpert, mixture_log_prob, product_of_experts


def experts(m: int = 3, b: int = 4, k: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(m, b, k, generator=generator, dtype=torch.float64),
            torch.randn(m, b, k, generator=generator, dtype=torch.float64))


def analytic_product(mus: list[torch.Tensor], variances: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Product of Gaussians by repeated pairwise products: N(a, A) N(b, B) ∝ N((aB + bA)/(A+B), AB/(A+B))."""
    mean, var = mus[0], variances[0]
    for mu, v in zip(mus[1:], variances[1:]):
        mean, var = (mean * v + mu * var) / (var + v), var * v / (var + v)
    return mean, var


def test_product_matches_analytic_product_with_prior():
    mu, logvar = experts()
    present = torch.ones(3, 4, dtype=torch.bool)
    got_mu, got_logvar = product_of_experts(mu, logvar, present)
    want_mu, want_var = analytic_product([torch.zeros_like(mu[0]), *mu], [torch.ones_like(mu[0]), *logvar.exp()])
    torch.testing.assert_close(got_mu, want_mu)
    torch.testing.assert_close(got_logvar.exp(), want_var)


def test_absent_modality_gives_product_of_remaining_experts():
    mu, logvar = experts()
    present = torch.ones(3, 4, dtype=torch.bool)
    present[1, :2] = False  # modality 1 absent for samples 0 and 1
    garbage_mu, garbage_logvar = mu.clone(), logvar.clone()
    garbage_mu[1, :2], garbage_logvar[1, :2] = float("nan"), float("inf")
    got_mu, got_logvar = product_of_experts(garbage_mu, garbage_logvar, present)
    remaining_mu, remaining_logvar = product_of_experts(mu[[0, 2]], logvar[[0, 2]], torch.ones(2, 4, dtype=torch.bool))
    torch.testing.assert_close(got_mu[:2], remaining_mu[:2])
    torch.testing.assert_close(got_logvar[:2], remaining_logvar[:2])
    full_mu, _ = product_of_experts(mu, logvar, torch.ones(3, 4, dtype=torch.bool))
    torch.testing.assert_close(got_mu[2:], full_mu[2:])


def test_no_present_expert_gives_the_prior():
    mu, logvar = experts()
    none = torch.zeros(3, 4, dtype=torch.bool)
    for prior in (True, False):
        got_mu, got_logvar = product_of_experts(mu, logvar, none, prior=prior)
        assert torch.all(got_mu == 0) and torch.all(got_logvar == 0)


def test_product_without_prior_of_one_expert_is_that_expert():
    mu, logvar = experts()
    present = torch.zeros(3, 4, dtype=torch.bool)
    present[2] = True
    got_mu, got_logvar = product_of_experts(mu, logvar, present, prior=False)
    torch.testing.assert_close(got_mu, mu[2])
    torch.testing.assert_close(got_logvar, logvar[2])


def test_mixture_log_prob_matches_torch_mixture_over_present_experts():
    mu, logvar = experts()
    present = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 0]], dtype=torch.bool)
    z = torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = mixture_log_prob(z, mu, logvar, present)
    for b in range(4):
        rows = present[:, b]
        mixture = MixtureSameFamily(Categorical(torch.ones(int(rows.sum()), dtype=torch.float64)),
                                    Independent(Normal(mu[rows, b], torch.exp(0.5 * logvar[rows, b])), 1))
        assert got[b].item() == pytest.approx(mixture.log_prob(z[b]).item(), abs=1e-10)
    # leading sample axes broadcast: one point per expert (M, B, K) -> (M, B)
    per_expert = mixture_log_prob(mu, mu, logvar, present)
    assert per_expert.shape == (3, 4) and torch.isfinite(per_expert).all()
    assert mixture_log_prob(z, mu, logvar, torch.zeros(3, 4, dtype=torch.bool)).eq(-math.inf).all()


def test_expert_clamps_logvar_and_every_parameter_gets_a_gradient():
    expert = GaussianExpert(6, 3, hidden=8)
    mu, logvar = expert(torch.randn(5, 6) * 1e6)
    assert logvar.min() >= -8 and logvar.max() <= 8
    expert.zero_grad()
    mu, logvar = expert(torch.randn(5, 6))
    (mu.sum() + logvar.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in expert.parameters())

"""MVAE / MMVAE: ELBO terms against torch.distributions, missing modalities, gradients, cross-modal generation."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from polyfuse.generative import MultimodalVAE, TokenDecoder, product_of_experts

DIMS = {"image": 6, "audio": 5}


def inputs(batch: int = 4, seed: int = 0, dims: dict[str, int] = DIMS) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, d, generator=generator, dtype=torch.float64) for m, d in dims.items()}


def make_vae(posterior: str, dims: dict[str, int] = DIMS, **options) -> MultimodalVAE:
    torch.manual_seed(0)
    return MultimodalVAE(dims, latent_dim=3, hidden=8, posterior=posterior, **options).double().eval()


def normal(mu: torch.Tensor, logvar: torch.Tensor) -> Independent:
    return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)


def test_poe_elbo_matches_independent_computation():
    """MVAE objective = ELBO(joint) + ELBO(image) + ELBO(audio), each from torch.distributions."""
    vae, x = make_vae("poe", beta=0.7, weights={"audio": 2.0}), inputs()
    torch.manual_seed(1)
    got = vae.elbo(x)
    torch.manual_seed(1)
    experts = {m: vae.experts[m](x[m]) for m in DIMS}
    prior = normal(torch.zeros(4, 3, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64))
    total, kl_total = 0.0, 0.0
    for subset in (["image", "audio"], ["image"], ["audio"]):
        precision = 1.0 + sum(torch.exp(-experts[m][1]) for m in subset)
        mean = sum(experts[m][0] * torch.exp(-experts[m][1]) for m in subset) / precision
        q = normal(mean, -torch.log(precision))
        z = mean + torch.exp(-0.5 * torch.log(precision)) * torch.randn(4, 3, dtype=torch.float64)
        weights = {"image": 1.0, "audio": 2.0}
        rec = sum(weights[m] * Independent(Normal(vae.decoders[m](z), 1.0), 1).log_prob(x[m]) for m in subset)
        kl = kl_divergence(q, prior)
        total = total + rec - 0.7 * kl
        kl_total = kl_total + kl
    torch.testing.assert_close(got["loss"], -total.mean())
    torch.testing.assert_close(got["kl"], kl_total.mean())


def test_moe_elbo_matches_independent_computation():
    """MMVAE stratified ELBO: 1/M sum_m [sum_n log p(x_n|z_m) + log p(z_m) - log q(z_m|X)], z_m ~ q_m."""
    vae, x = make_vae("moe"), inputs()
    torch.manual_seed(2)
    got = vae.elbo(x)
    torch.manual_seed(2)
    experts = {m: vae.experts[m](x[m]) for m in DIMS}
    eps = torch.randn(2, 4, 3, dtype=torch.float64)
    mixture = MixtureSameFamily(Categorical(torch.ones(4, 2, dtype=torch.float64)),
                                Independent(Normal(torch.stack([experts[m][0] for m in DIMS], 1),
                                                   torch.exp(0.5 * torch.stack([experts[m][1] for m in DIMS], 1))), 1))
    prior = normal(torch.zeros(4, 3, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64))
    total = 0.0
    for i, m in enumerate(DIMS):
        z = experts[m][0] + torch.exp(0.5 * experts[m][1]) * eps[i]
        rec = sum(Independent(Normal(vae.decoders[n](z), 1.0), 1).log_prob(x[n]) for n in DIMS)
        total = total + rec + prior.log_prob(z) - mixture.log_prob(z)
    torch.testing.assert_close(got["loss"], -(total / 2).mean())


@pytest.mark.parametrize("posterior", ["poe", "moe"])
def test_absent_modality_is_the_same_as_leaving_it_out(posterior):
    dims = {"image": 6, "audio": 5, "text": 4}
    vae, x = make_vae(posterior, dims), inputs(dims=dims)
    garbage = dict(x, audio=torch.full_like(x["audio"], float("nan")))
    present = {"audio": torch.zeros(4, dtype=torch.bool)}
    torch.manual_seed(3)
    absent = vae.elbo(garbage, present)
    torch.manual_seed(3)
    left_out = vae.elbo({m: v for m, v in x.items() if m != "audio"})
    for key in ("loss", "kl"):
        torch.testing.assert_close(absent[key], left_out[key])
    assert "nll/audio" not in left_out and absent["nll/audio"].item() == 0.0


def test_vae_posterior_with_a_modality_absent_is_the_product_of_the_remaining_experts():
    dims = {"image": 6, "audio": 5, "text": 4}
    vae, x = make_vae("poe", dims), inputs(dims=dims)
    present = {"audio": torch.tensor([False, True, False, True])}
    mu, logvar = vae.posterior(dict(x, audio=torch.full_like(x["audio"], float("inf"))), present)
    remaining = [vae.experts[m](x[m]) for m in ("image", "text")]
    want_mu, want_logvar = product_of_experts(torch.stack([r[0] for r in remaining]),
                                              torch.stack([r[1] for r in remaining]),
                                              torch.ones(2, 4, dtype=torch.bool))
    torch.testing.assert_close(mu[[0, 2]], want_mu[[0, 2]])
    torch.testing.assert_close(logvar[[0, 2]], want_logvar[[0, 2]])


@pytest.mark.parametrize("posterior", ["poe", "moe"])
def test_every_parameter_gets_a_finite_gradient_despite_absent_garbage(posterior):
    dims = {"image": 6, "audio": 5, "text": 4}
    vae = make_vae(posterior, dims, subsets=2).train()
    x = inputs(dims=dims)
    x["text"][1] = float("nan")
    present = {"text": torch.tensor([True, False, True, True])}
    vae.elbo(x, present)["loss"].backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("posterior", ["poe", "moe"])
def test_cross_modal_generation_image_to_text_tokens_and_audio_to_image(posterior):
    """A tiny VAE learns paired data: image -> text tokens and audio -> image features beat chance."""
    torch.manual_seed(0)
    classes, length, vocab = 5, 4, 12
    codebook = {"image": torch.randn(classes, 8) * 2, "audio": torch.randn(classes, 6) * 2}
    sentences = torch.randint(0, vocab, (classes, length))

    def sample(n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        label = torch.randint(0, classes, (n,))
        feats = {m: c[label] + 0.3 * torch.randn(n, c.shape[1]) for m, c in codebook.items()}
        feats["text"] = torch.nn.functional.one_hot(sentences[label], vocab).float().mean(1)  # a bag of words
        return feats, label, sentences[label]

    vae = MultimodalVAE({"image": 8, "audio": 6, "text": vocab}, latent_dim=4, hidden=32, posterior=posterior,
                        decoders={"text": TokenDecoder(4, vocab, length, hidden=32)})
    optimizer = torch.optim.Adam(vae.parameters(), lr=2e-2)
    for _ in range(120):
        feats, _, ids = sample(64)
        loss = vae.elbo(feats, targets={"text": (ids, None)})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae.eval()
    feats, label, ids = sample(256)
    with torch.no_grad():
        generated = vae.generate({"image": feats["image"]}, "text")
        image_from_audio = vae.generate({"audio": feats["audio"]}, "image")
    assert generated.shape == (256, length)
    assert (generated == ids).float().mean() > 0.9
    error = (image_from_audio - feats["image"]).pow(2).mean()
    baseline = (feats["image"] - feats["image"].mean(0)).pow(2).mean()
    assert error < 0.25 * baseline


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="'poe'"):
        MultimodalVAE(DIMS, posterior="sum")
    with pytest.raises(KeyError, match="unknown modalities"):
        MultimodalVAE(DIMS, decoders={"text": torch.nn.Identity()})
    with pytest.raises(KeyError, match="unknown modalities"):
        make_vae("poe").elbo({"video": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="mixture"):
        make_vae("moe").posterior(inputs())

"""Multimodal VAEs with a product-of-experts (MVAE) or mixture-of-experts (MMVAE) joint posterior.

* **MVAE** -- Wu & Goodman, "Multimodal Generative Models for Scalable Weakly-Supervised
  Learning", NeurIPS 2018. ``q(z|X_S) ∝ p(z) prod_{m in S} q(z|x_m)``; the training objective sums
  ELBOs over sub-sampled modality subsets: the joint ``ELBO(X)``, every unimodal ``ELBO(x_m)`` and
  ``k`` random subsets ``ELBO(X_S)``, where
  ``ELBO(X_S) = E_{q(z|X_S)}[sum_{m in S} lambda_m log p(x_m|z)] - beta KL(q(z|X_S) || p(z))``.
* **MMVAE** -- Shi, Siddharth, Paige & Torr, NeurIPS 2019. ``q(z|X) = 1/M sum_m q(z|x_m)``, and the
  stratified ELBO ``1/M sum_m E_{z_m ~ q(z|x_m)}[sum_n lambda_n log p(x_n|z_m) + beta (log p(z_m) -
  log q(z_m|X))]`` (one reparameterised sample per expert; every expert reconstructs every modality,
  which trains cross-modal generation directly).

Missing modalities, per sample: an absent modality has no expert (PoE: no factor; MoE: no mixture
component) and no reconstruction term; a sample with no present modality in a subset contributes
nothing to that subset's ELBO. Absent values are replaced by zeros before any network sees them.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from torch import Tensor, nn

from polyfuse.generative.decoders import FeatureDecoder, TokenDecoder
from polyfuse.generative.experts import GaussianExpert, mixture_log_prob, product_of_experts
from polyfuse.generative.gaussian import gaussian_log_prob, kl_to_standard_normal, reparameterize
from polyfuse.masking import zero_invalid

__all__ = ["MultimodalVAE"]

Posterior = Literal["poe", "moe"]


class MultimodalVAE(nn.Module):
    """Per-modality Gaussian experts and decoders with a PoE (MVAE) or MoE (MMVAE) joint posterior.

    Inputs are per-modality feature vectors ``x_m (B, D_m)`` (e.g. pooled encoder outputs) and
    presence ``(B,)`` bool; reconstruction targets default to the inputs and may be anything a
    decoder scores (``(ids, mask)`` for a :class:`TokenDecoder`).

    Args:
        dims: modality -> input width ``D_m``.
        latent_dim: ``K``. hidden: width of experts and default decoders.
        posterior: ``"poe"`` (MVAE) or ``"moe"`` (MMVAE).
        decoders: optional modality -> decoder (default: a :class:`FeatureDecoder` reconstructing ``x_m``).
        subsets: MVAE's ``k``: random modality subsets added to the ELBO per training step.
        beta: KL weight. weights: per-modality likelihood weights ``lambda_m`` (default 1).
        scale: ``sigma`` of the default feature decoders.
    """

    def __init__(self, dims: Mapping[str, int], latent_dim: int = 32, hidden: int = 128,
                 posterior: Posterior = "poe", decoders: Mapping[str, nn.Module] | None = None, subsets: int = 1,
                 beta: float = 1.0, weights: Mapping[str, float] | None = None, scale: float = 1.0) -> None:
        super().__init__()
        if posterior not in ("poe", "moe"):
            raise ValueError(f"MultimodalVAE posterior must be 'poe' (MVAE) or 'moe' (MMVAE), got {posterior!r}")
        if not dims:
            raise ValueError("MultimodalVAE needs at least one modality")
        decoders = dict(decoders or {})
        unknown = [m for m in [*decoders, *(weights or {})] if m not in dims]
        if unknown:
            raise KeyError(f"MultimodalVAE: decoders/weights given for unknown modalities {unknown}; dims: {list(dims)}")
        self.modalities = list(dims)
        self.dims = {m: int(d) for m, d in dims.items()}
        self.latent_dim, self.posterior_kind = latent_dim, posterior
        self.subsets, self.beta = int(subsets), float(beta)
        self.weights = {m: float((weights or {}).get(m, 1.0)) for m in self.modalities}
        self.experts = nn.ModuleDict({m: GaussianExpert(d, latent_dim, hidden) for m, d in self.dims.items()})
        self.decoders = nn.ModuleDict({m: decoders.get(m) or FeatureDecoder(latent_dim, d, hidden, scale)
                                       for m, d in self.dims.items()})

    # ----------------------------------------------------------------------------- posteriors
    def _stack(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None) -> tuple[Tensor, Tensor, Tensor]:
        """Expert parameters ``mu, logvar (M, B, K)`` and presence ``(M, B)`` (missing keys: absent)."""
        if not inputs:
            raise ValueError(f"MultimodalVAE got no input; expected some of {self.modalities}")
        unknown = [m for m in inputs if m not in self.dims]
        if unknown:
            raise KeyError(f"MultimodalVAE got unknown modalities {unknown}; it was built for {self.modalities}")
        first = next(iter(inputs.values()))
        batch, device = first.shape[0], first.device
        mus, logvars, masks = [], [], []
        for m in self.modalities:
            if m in inputs:
                x = inputs[m]
                mask = torch.ones(batch, dtype=torch.bool, device=device) if present is None or m not in present \
                    else present[m]
            else:
                x = first.new_zeros(batch, self.dims[m])
                mask = torch.zeros(batch, dtype=torch.bool, device=device)
            x = zero_invalid(x, mask)
            mu, logvar = self.experts[m](x)
            mus.append(mu)
            logvars.append(logvar)
            masks.append(mask)
        return torch.stack(mus), torch.stack(logvars), torch.stack(masks)

    def posterior(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """PoE posterior ``(mu, logvar) (B, K)`` of the present modalities (MVAE only)."""
        if self.posterior_kind != "poe":
            raise ValueError("posterior() is the product of experts; an MMVAE's posterior is a mixture "
                             "(use experts() and mixture_log_prob)")
        mu, logvar, mask = self._stack(inputs, present)
        return product_of_experts(mu, logvar, mask)

    def experts_of(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The unimodal posteriors ``mu, logvar (M, B, K)`` and presence ``(M, B)``, in :attr:`modalities` order."""
        return self._stack(inputs, present)

    # ----------------------------------------------------------------------------- objective
    def _targets(self, inputs: Mapping[str, Tensor], targets: Mapping[str, Any] | None,
                 mask: Tensor) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, m in enumerate(self.modalities):
            target = (targets or {}).get(m, inputs.get(m))
            if target is None:
                continue
            if isinstance(target, Tensor) and target.is_floating_point():  # no NaN garbage in absent rows
                target = zero_invalid(target, mask[i])
            out[m] = target
        return out

    def _reconstruction(self, z: Tensor, targets: Mapping[str, Any], mask: Tensor) -> dict[str, Tensor]:
        """``lambda_m log p(x_m | z)`` per modality where ``mask`` (else 0); ``z (..., B, K)`` -> ``(..., B)``."""
        terms = {}
        for i, m in enumerate(self.modalities):
            if m not in targets:
                continue
            value = self.weights[m] * self.decoders[m].log_likelihood(z, targets[m])
            terms[m] = torch.where(mask[i], value, torch.zeros((), dtype=value.dtype, device=value.device))  # (..., B)
        return terms

    def _subsets(self, present: Tensor) -> list[Tensor]:
        """Modality subsets ``(M,)`` bool: all, each single one, and (training) ``k`` random ones."""
        count = len(self.modalities)
        eye = torch.eye(count, dtype=torch.bool, device=present.device)
        subsets = [torch.ones(count, dtype=torch.bool, device=present.device)]
        if count > 1:
            subsets += list(eye)
        if self.training and count > 2:
            for _ in range(self.subsets):
                draw = torch.rand(count, device=present.device) < 0.5
                subsets.append(draw if bool(draw.any()) else eye[int(torch.randint(count, ()))])
        return subsets

    def elbo(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None,
             targets: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        """The training objective, averaged over the batch.

        Returns ``{"loss": -ELBO objective, "kl": ..., "nll/<m>": ...}`` (scalars; for MVAE summed over
        the subsets, for MMVAE the stratified mixture ELBO).
        """
        mu, logvar, mask = self._stack(inputs, present)
        targets = self._targets(inputs, targets, mask)
        batch = mu.shape[1]
        if self.posterior_kind == "poe":
            total, kl_total = mu.new_zeros(batch), mu.new_zeros(batch)
            nll = {m: mu.new_zeros(batch) for m in targets}
            for subset in self._subsets(mask):
                subset_mask = mask & subset[:, None]
                valid = subset_mask.any(0)
                q_mu, q_logvar = product_of_experts(mu, logvar, subset_mask)
                z = reparameterize(q_mu, q_logvar)
                terms = self._reconstruction(z, targets, subset_mask)
                kl = zero_invalid(kl_to_standard_normal(q_mu, q_logvar), valid)
                total = total + sum(terms.values(), mu.new_zeros(batch)) - self.beta * kl
                kl_total = kl_total + kl
                for m, value in terms.items():
                    nll[m] = nll[m] - value
        else:
            z = reparameterize(mu, logvar)  # (M, B, K): one sample per expert (stratified)
            log_q = mixture_log_prob(z, mu, logvar, mask)  # (M, B)
            log_p = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
            terms = self._reconstruction(z, targets, mask)  # (M, B): every expert's sample decodes every modality
            regulariser = zero_invalid(log_p - log_q, mask)
            count = mask.sum(0).clamp_min(1).to(mu.dtype)
            per_expert = sum(terms.values(), torch.zeros_like(log_p)) + self.beta * regulariser
            total = zero_invalid(per_expert, mask).sum(0) / count
            kl_total = -zero_invalid(regulariser, mask).sum(0) / count
            nll = {m: -zero_invalid(value, mask).sum(0) / count for m, value in terms.items()}
        out = {"loss": -total.mean(), "kl": kl_total.mean()}
        out.update({f"nll/{m}": value.mean() for m, value in nll.items()})
        return out

    # ----------------------------------------------------------------------------- generation
    def predict(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None, target: str,
                sample: bool = False) -> Tensor:
        """The decoder output for ``target`` from the present modalities.

        MVAE: ``decoder(z)`` with ``z`` the PoE posterior mean; MMVAE: the average over the present
        experts of ``decoder(z_m)``, ``z_m`` the expert's mean. With ``sample=True``, ``z`` / ``z_m``
        are reparameterised samples instead (differentiable in the variances). Feature decoders give
        the mean ``(B, D)``, token decoders logits ``(B, L, V)``. With no present modality the prior
        mean ``z = 0`` is decoded.
        """
        if target not in self.decoders:
            raise KeyError(f"MultimodalVAE has no decoder for {target!r}; modalities: {self.modalities}")
        decoder = self.decoders[target]
        mu, logvar, mask = self._stack(inputs, present)
        if self.posterior_kind == "poe":
            q_mu, q_logvar = product_of_experts(mu, logvar, mask)
            return decoder(reparameterize(q_mu, q_logvar) if sample else q_mu)
        decoded = decoder(reparameterize(mu, logvar) if sample else mu)  # (M, B, ...)
        shape = (*mask.shape, *[1] * (decoded.dim() - 2))
        count = mask.sum(0).clamp_min(1).to(decoded.dtype).reshape(shape[1:])
        mean = zero_invalid(decoded, mask).sum(0) / count
        return torch.where(mask.any(0).reshape(shape[1:]), mean, decoder(torch.zeros_like(mu[0])))

    def generate(self, inputs: Mapping[str, Tensor], target: str, present: Mapping[str, Tensor] | None = None) -> Tensor:
        """Cross-modal generation: features ``(B, D)`` or token ids ``(B, L)`` of ``target`` from ``inputs``."""
        out = self.predict(inputs, present, target)
        return out.argmax(-1) if isinstance(self.decoders[target], TokenDecoder) else out

    def extra_repr(self) -> str:
        return f"posterior={self.posterior_kind!r}, latent_dim={self.latent_dim}, beta={self.beta}, subsets={self.subsets}"

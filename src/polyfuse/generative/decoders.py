"""Likelihood decoders ``p(x_m | z)`` for the multimodal VAEs: continuous features and token sequences.

Every decoder maps a latent ``z (..., B, K)`` to a distribution over one modality and exposes

* ``log_likelihood(z, target) -> (..., B)`` (summed over the modality's dimensions/tokens),
* ``generate(z)``: the most likely output (the mean for features, the arg-max token per position).

Cross-modal generation is ``decoder_n.generate(z)`` with ``z`` from the posterior of other
modalities (Wu & Goodman, 2018; Shi et al., 2019): ``audio -> image features``, ``image -> text tokens``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.masking import zero_invalid

__all__ = ["FeatureDecoder", "TokenDecoder"]


class FeatureDecoder(nn.Module):
    """Gaussian likelihood of a feature vector: ``p(x | z) = N(x; MLP(z), sigma^2 I)``, ``x (B, D)``.

    ``sigma`` is fixed (``scale``); with LayerNorm-ed targets (unit variance per dimension) the
    default ``1.0`` weighs reconstruction and KL as a standard VAE would.

    Args:
        latent_dim: ``K``. out_dim: ``D``. hidden: MLP width. scale: ``sigma``.
    """

    def __init__(self, latent_dim: int, out_dim: int, hidden: int = 128, scale: float = 1.0) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"FeatureDecoder scale must be positive, got {scale}")
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.scale = float(scale)

    def forward(self, z: Tensor) -> Tensor:
        """The mean ``(..., B, D)``."""
        return self.net(z)

    def log_likelihood(self, z: Tensor, target: Tensor) -> Tensor:
        mean = self.net(z)
        return -0.5 * (((target - mean) / self.scale).pow(2) + math.log(2 * math.pi * self.scale ** 2)).sum(-1)

    def generate(self, z: Tensor) -> Tensor:
        return self.net(z)


class TokenDecoder(nn.Module):
    """Categorical likelihood of a token sequence, position by position (non-autoregressive).

    ``logits[l] = W GELU(A z + e_l)`` for positions ``l < max_length`` (learned position embeddings
    ``e_l``); ``log p(x | z) = sum over real tokens of log softmax(logits[l])[x_l]``. A simple
    conditionally-independent text likelihood, the kind multimodal VAEs use for short captions
    (Shi et al., 2019 use a CNN over a fixed-length sentence).

    ``target`` is ``(ids (B, L), mask (B, L) | None)``: padded positions (``mask`` False) do not
    count. ``generate(z)`` returns arg-max ids ``(B, max_length)``.

    Args:
        latent_dim: ``K``. vocab_size: ``V``. max_length: ``L``. hidden: width of the per-position MLP.
    """

    def __init__(self, latent_dim: int, vocab_size: int, max_length: int, hidden: int = 128) -> None:
        super().__init__()
        self.max_length = max_length
        self.latent = nn.Linear(latent_dim, hidden)
        self.positions = nn.Parameter(torch.randn(max_length, hidden) * 0.02)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, z: Tensor) -> Tensor:
        """Logits ``(..., B, max_length, V)``."""
        return self.out(F.gelu(self.latent(z).unsqueeze(-2) + self.positions))

    def log_likelihood(self, z: Tensor, target: tuple[Tensor, Tensor | None]) -> Tensor:
        ids, mask = target
        length = ids.shape[-1]
        if length > self.max_length:
            raise ValueError(f"TokenDecoder was built for max_length={self.max_length}, got sequences of {length}")
        log_probs = torch.log_softmax(self.forward(z)[..., :length, :], dim=-1)
        picked = log_probs.gather(-1, ids.expand(*log_probs.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        if mask is not None:
            picked = zero_invalid(picked, mask)
        return picked.sum(-1)

    def generate(self, z: Tensor) -> Tensor:
        return self.forward(z).argmax(-1)

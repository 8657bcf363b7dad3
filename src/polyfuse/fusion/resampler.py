"""Perceiver resampler connector: a fixed number of learned latents per modality (Flamingo / IDEFICS)."""

from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import register
from polyfuse.fusion.connectors import Connector
from polyfuse.fusion.perceiver import PerceiverFusion


@register("resampler_connector")
class PerceiverResamplerConnector(Connector):
    """``N`` learned latents per modality read that modality's tokens and become its ``N`` LM tokens.

    Alayrac et al., "Flamingo: a Visual Language Model for Few-Shot Learning", NeurIPS 2022 (the
    Perceiver Resampler; also IDEFICS). Each modality has its own
    :class:`~polyfuse.fusion.perceiver.PerceiverFusion` over that modality alone (cross-attention of
    the latents to the tokens, latent self-attention, ``depth`` rounds) with output width
    ``out_dim``, so an image of any number of patches or a clip of any length gives exactly
    ``latents`` tokens. Flamingo also lets latents attend to themselves inside the cross-attention
    (keys = tokens + latents); here that role is played by the latent self-attention blocks.

    Padding: padded tokens are masked keys. Missing modalities: the output of an absent sample is
    masked (``present=False``) and never spliced.

    Args:
        dims: modality -> encoder width. out_dim: the LM hidden size. latents: ``N`` tokens per modality.
        width: latent width (default ``out_dim``). depth, self_depth, heads, mlp_ratio, dropout: see
        :class:`~polyfuse.fusion.perceiver.PerceiverFusion`.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, latents: int = 16, width: int | None = None,
                 depth: int = 2, self_depth: int = 1, heads: int = 4, mlp_ratio: float = 2.0,
                 dropout: float = 0.0) -> None:
        super().__init__(dims, out_dim)
        self.resamplers = nn.ModuleDict({
            m: PerceiverFusion({m: d}, out_dim, latents=latents, width=width, depth=depth, self_depth=self_depth,
                               heads=heads, mlp_ratio=mlp_ratio, dropout=dropout)
            for m, d in self.dims.items()})

    def project(self, name: str, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        out = self.resamplers[name]({name: Encoded(tokens, mask)})
        return out.tokens, out.mask

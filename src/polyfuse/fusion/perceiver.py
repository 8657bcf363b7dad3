"""Perceiver-style latent fusion: a small learned latent array reads all modalities by cross-attention."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.blocks import ContextAttention, FeedForward, ModalityProjection, run_blocks
from polyfuse.layers import TransformerBlock


@register("perceiver")
class PerceiverFusion(Fusion):
    """``N`` learned latents cross-attend to the concatenated tokens of all modalities, then self-attend.

    Each of ``depth`` rounds is ``z <- z + CrossAttn(z, x)``, ``z <- z + FFN(z)``, then
    ``self_depth`` latent self-attention blocks; ``x`` is every modality's tokens projected to
    ``width`` with a modality-type embedding. Jaegle, Gimeno, Brock, Zisserman, Vinyals &
    Carreira, "Perceiver: General Perception with Iterative Attention", ICML 2021 (used as a
    multimodal fusion as in Perceiver IO / the audio-visual Perceiver experiments). Cost is linear
    in the number of input tokens. ``tokens`` are the ``N`` latents (all valid); ``pooled`` their
    mean. Any number of modalities.

    Padding and missing modalities: padded tokens and every token of an absent modality are masked
    keys, so the latents read only what is present; with nothing present the cross-attention gives
    no update and the latents stay the learned initial array.

    Attention maps: ``"latents->inputs/layer{i}"`` ``(B, H, N, sum_m L_m)`` with the modalities'
    tokens in ``dims`` order, and ``"latents/layer{i}.{j}"`` for latent self-attention.

    Args:
        dims, out_dim: see :class:`Fusion`. latents: ``N``. width: latent width (default ``out_dim``).
        depth: cross-attention rounds. self_depth: latent blocks per round. heads, mlp_ratio, dropout.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, latents: int = 16, width: int | None = None,
                 depth: int = 2, self_depth: int = 1, heads: int = 4, mlp_ratio: float = 2.0,
                 dropout: float = 0.1) -> None:
        super().__init__(dims, out_dim)
        width = width or out_dim
        self.project = ModalityProjection(self.dims, width)
        self.latents = nn.Parameter(torch.randn(latents, width) * 0.02)
        self.cross = nn.ModuleList([ContextAttention(width, heads, dropout=dropout) for _ in range(depth)])
        self.ffn = nn.ModuleList([FeedForward(width, mlp_ratio, dropout) for _ in range(depth)])
        self.self_blocks = nn.ModuleList([
            nn.ModuleList([TransformerBlock(width, heads, mlp_ratio, dropout, norm="pre") for _ in range(self_depth)])
            for _ in range(depth)])
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_dim)

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        projected = self.project(inputs)
        x = torch.cat([projected[m] for m in self.modalities], dim=1)
        x_mask = torch.cat([inputs[m].mask for m in self.modalities], dim=1)
        z = self.latents.expand(x.shape[0], -1, -1)
        maps: dict[str, Tensor] = {}
        for index, (cross, ffn, blocks) in enumerate(zip(self.cross, self.ffn, self.self_blocks)):
            update, probs = cross(z, x, x_mask, return_attention)
            z = ffn(z + self.drop(update))
            if probs is not None:
                maps[f"latents->inputs/layer{index}"] = probs
            z, self_maps = run_blocks(blocks, z, torch.ones(z.shape[:2], dtype=torch.bool, device=z.device),
                                      f"latents/layer{index}.{{i}}", return_attention)
            maps.update(self_maps)
        tokens = self.out(self.norm(z))
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return FusionOutput(pooled=tokens.mean(1), tokens=tokens, mask=mask, attentions=maps)

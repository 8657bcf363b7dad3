"""Multimodal Transformer (MulT): pairwise crossmodal transformers, then a self-attention transformer per target."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.blocks import ContextAttention, FeedForward, run_blocks
from polyfuse.fusion.masking import masked_mean, substitute_missing_token, zero_invalid
from polyfuse.layers import TransformerBlock


class CrossmodalTransformer(nn.Module):
    """Source -> target crossmodal transformer (MulT Sec. 3.2).

    Each layer: ``z <- z + CM(LN(z), LN(x_source))``, ``z <- z + FFN(LN(z))``; the keys/values are
    always the *low-level* source features ``x_source``, as in the paper.
    """

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.attend = nn.ModuleList([ContextAttention(width, heads, dropout=dropout) for _ in range(depth)])
        self.ffn = nn.ModuleList([FeedForward(width, mlp_ratio, dropout) for _ in range(depth)])
        self.drop = nn.Dropout(dropout)

    def forward(self, z: Tensor, source: Tensor, source_mask: Tensor,
                need_weights: bool) -> tuple[Tensor, list[Tensor]]:
        maps = []
        for attend, ffn in zip(self.attend, self.ffn):
            update, probs = attend(z, source, source_mask, need_weights)
            z = ffn(z + self.drop(update))
            if probs is not None:
                maps.append(probs)
        return z, maps


@register("mult")
class MultimodalTransformer(Fusion):
    """MulT: for every target modality, crossmodal transformers from each source, concatenated, then self-attention.

    Tsai, Bai, Liang, Kolter, Morency & Salakhutdinov, "Multimodal Transformer for Unaligned
    Multimodal Language Sequences", ACL 2019. For each ordered pair ``s -> t`` a crossmodal
    transformer lets the target sequence attend to the source; the ``M - 1`` results for a target
    are concatenated along features (``(M - 1) * width``) and refined by ``self_depth`` self-attention
    blocks. ``pooled = W [mean(z_1); ...; mean(z_M)]`` (masked means; the paper takes the last
    element, which assumes right-aligned sequences). Inputs are projected by a per-modality linear
    layer (the paper's 1-D convolution with kernel 1) and tagged with nothing else: the encoders
    already carry positions. Any number ``>= 2`` of modalities (``M (M - 1)`` crossmodal transformers).

    Padding: masked as keys everywhere; padded target positions are masked in the outputs.

    Missing modalities: an absent *source* gives its crossmodal attention no update (the target
    passes through the feed-forward layers only); an absent *target* is replaced by one learned
    [MISSING] token that queries the present sources.

    Attention maps: ``"{target}->{source}/layer{i}"`` (crossmodal) and
    ``"{target}->{target}/layer{i}"`` (self-attention over the concatenated streams).

    Args:
        dims, out_dim: see :class:`Fusion`. width: per-stream width (default ``out_dim // 2``).
        depth: crossmodal layers. self_depth: self-attention layers per target.
        heads, mlp_ratio, dropout: layer options.
    """

    min_modalities = 2

    def __init__(self, dims: Mapping[str, int], out_dim: int, width: int | None = None, depth: int = 2,
                 self_depth: int = 1, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.1) -> None:
        super().__init__(dims, out_dim)
        width = width or max(heads, out_dim // 2)
        joint = (len(self.dims) - 1) * width
        self.proj = nn.ModuleDict({m: nn.Linear(d, width) for m, d in self.dims.items()})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(width) * 0.02) for m in self.dims})
        self.crossmodal = nn.ModuleDict({
            f"{s}->{t}": CrossmodalTransformer(width, depth, heads, mlp_ratio, dropout)
            for t in self.modalities for s in self.modalities if s != t})
        self.self_blocks = nn.ModuleDict({
            t: nn.ModuleList([TransformerBlock(joint, heads, mlp_ratio, dropout, norm="pre") for _ in range(self_depth)])
            for t in self.modalities})
        self.norms = nn.ModuleDict({t: nn.LayerNorm(joint) for t in self.modalities})
        self.pool = nn.Linear(len(self.dims) * joint, out_dim)
        self.out = nn.Linear(joint, out_dim)

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        projected = {m: self.proj[m](enc.tokens) for m, enc in inputs.items()}
        maps: dict[str, Tensor] = {}
        pooled, tokens, masks = [], [], []
        for target in self.modalities:
            encoded = inputs[target]
            z, mask = substitute_missing_token(projected[target], encoded.mask, encoded.present_or_full(),
                                               self.missing[target])
            streams = []
            for source in self.modalities:
                if source == target:
                    continue
                stream, probs = self.crossmodal[f"{source}->{target}"](
                    z, projected[source], inputs[source].mask, return_attention)
                streams.append(stream)
                maps.update({f"{target}->{source}/layer{i}": p for i, p in enumerate(probs)})
            joint, self_maps = run_blocks(self.self_blocks[target], torch.cat(streams, dim=-1), mask,
                                          f"{target}->{target}/layer{{i}}", return_attention)
            maps.update(self_maps)
            joint = self.norms[target](joint)
            pooled.append(masked_mean(joint, mask))
            tokens.append(self.out(joint))
            masks.append(mask)
        mask = torch.cat(masks, dim=1)
        return FusionOutput(pooled=self.pool(torch.cat(pooled, dim=-1)),
                            tokens=zero_invalid(torch.cat(tokens, dim=1), mask), mask=mask, attentions=maps)

"""Attention bottlenecks (MBT): modalities exchange information only through a few shared bottleneck tokens."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded
from polyfuse.checkpointing import checkpointed
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.masking import present_mean, zero_invalid
from polyfuse.layers import TransformerBlock


@register("mbt")
class BottleneckFusion(Fusion):
    """Multimodal Bottleneck Transformer.

    Each modality has its own [CLS] token and its own transformer blocks (width ``width``). The
    first ``fusion_layer`` blocks run per modality; from then on block ``i`` of modality ``m``
    processes ``[cls_m; x_m; b]`` and the shared bottleneck tokens are updated as the average of
    the per-modality results, ``b <- mean_m b_m``. Nagrani, Yang, Arnab, Jansen, Schmid & Sun,
    "Attention Bottlenecks for Multimodal Fusion", NeurIPS 2021 (mid fusion with ``B`` bottleneck
    tokens). ``pooled = W mean_m LN(cls_m)`` (the paper averages per-modality [CLS] logits).
    ``tokens`` = every stream (``[cls_m; x_m]``) followed by the bottleneck tokens. Any number of
    modalities.

    Padding: masked as keys in every block; padded outputs are zero.

    Missing modalities: an absent modality's [CLS] and tokens are masked (in its own blocks only
    the bottleneck tokens are valid keys), its bottleneck copy is left out of the average, and its
    [CLS] is left out of the pooled mean -- all averages are renormalised over the present
    modalities. A sample with no present modality keeps the learned bottleneck and pools to zeros.

    Attention maps: ``"{m}/layer{i}"``, ``(B, H, L, L)`` over ``[cls_m; x_m]`` (+ bottleneck from
    ``fusion_layer`` on).

    Args:
        dims, out_dim: see :class:`Fusion`. width: stream width (default ``out_dim``).
        depth: blocks per modality. fusion_layer: index of the first fusion block (``0`` = all). A
            fusion block *writes* into the bottleneck; the streams *read* what the other modalities
            wrote only from the next fusion block on, so use ``fusion_layer <= depth - 2``.
        bottlenecks: number of bottleneck tokens. heads, mlp_ratio, dropout: block options.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, width: int | None = None, depth: int = 2,
                 fusion_layer: int = 0, bottlenecks: int = 4, heads: int = 4, mlp_ratio: float = 2.0,
                 dropout: float = 0.1) -> None:
        super().__init__(dims, out_dim)
        if not 0 <= fusion_layer < depth:
            raise ValueError(f"BottleneckFusion fusion_layer must be in [0, depth={depth}), got {fusion_layer}")
        width = width or out_dim
        self.fusion_layer = fusion_layer
        self.proj = nn.ModuleDict({m: nn.Linear(d, width) for m, d in self.dims.items()})
        self.cls = nn.ParameterDict({m: nn.Parameter(torch.randn(width) * 0.02) for m in self.dims})
        self.bottleneck = nn.Parameter(torch.randn(bottlenecks, width) * 0.02)
        self.blocks = nn.ModuleDict({m: nn.ModuleList([TransformerBlock(width, heads, mlp_ratio, dropout, norm="pre")
                                                       for _ in range(depth)]) for m in self.dims})
        self.norm = nn.LayerNorm(width)
        self.pool = nn.Linear(width, out_dim)
        self.out = nn.Linear(width, out_dim)

    def _block(self, name: str, index: int, x: Tensor, mask: Tensor, maps: dict[str, Tensor],
               return_attention: bool) -> Tensor:
        x, probs = checkpointed(self.blocks[name][index], x, mask, return_attention)
        if probs is not None:
            maps[f"{name}/layer{index}"] = probs
        return x

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        present = torch.stack([enc.present_or_full() for enc in inputs.values()], dim=1)  # (B, M)
        batch = present.shape[0]
        streams, masks = {}, {}
        for name, encoded in inputs.items():
            cls = self.cls[name].expand(batch, 1, -1)
            streams[name] = torch.cat([cls, self.proj[name](encoded.tokens)], dim=1)
            masks[name] = torch.cat([encoded.present_or_full()[:, None], encoded.mask], dim=1)
        bottleneck = self.bottleneck.expand(batch, -1, -1)
        ones = torch.ones(bottleneck.shape[:2], dtype=torch.bool, device=bottleneck.device)
        maps: dict[str, Tensor] = {}
        for index in range(len(self.blocks[self.modalities[0]])):
            if index < self.fusion_layer:
                streams = {m: self._block(m, index, x, masks[m], maps, return_attention) for m, x in streams.items()}
                continue
            updates = []
            for name, x in streams.items():
                length = x.shape[1]
                joint = self._block(name, index, torch.cat([x, bottleneck], dim=1),
                                    torch.cat([masks[name], ones], dim=1), maps, return_attention)
                streams[name], copy = joint[:, :length], joint[:, length:]
                updates.append(copy)
            averaged = present_mean(torch.stack(updates, dim=1), present)  # (B, N, width)
            bottleneck = torch.where(present.any(1)[:, None, None], averaged, bottleneck)
        cls = torch.stack([self.norm(x[:, 0]) for x in streams.values()], dim=1)  # (B, M, width)
        pooled = self.pool(present_mean(cls, present))
        mask = torch.cat([masks[m] for m in self.modalities] + [ones], dim=1)
        tokens = self.out(self.norm(torch.cat([streams[m] for m in self.modalities] + [bottleneck], dim=1)))
        return FusionOutput(pooled=pooled, tokens=zero_invalid(tokens, mask), mask=mask, attentions=maps)

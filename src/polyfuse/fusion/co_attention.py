"""Co-attention (two-stream) fusion: each modality keeps its own stream and cross-attends to the others."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.attention.varlen import Packing
from polyfuse.batch import Encoded
from polyfuse.checkpointing import checkpointed
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.blocks import MultiContextAttention
from polyfuse.fusion.masking import masked_mean, substitute_missing_token, zero_invalid
from polyfuse.fusion.packed import gather_with_missing_token, worth_packing
from polyfuse.layers import TransformerBlock


class CoAttentionLayer(nn.Module):
    """One LXMERT cross-modality layer for every stream: cross-attention, then self-attention + FFN.

    All streams cross-attend to the *layer inputs* of the other streams (both directions at once),
    then each runs its own pre-norm :class:`TransformerBlock`.
    """

    def __init__(self, modalities: list[str], width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.cross = nn.ModuleDict({m: MultiContextAttention(width, {o: width for o in modalities if o != m}, heads,
                                                             dropout) for m in modalities})
        self.blocks = nn.ModuleDict({m: TransformerBlock(width, heads, mlp_ratio, dropout, norm="pre")
                                     for m in modalities})
        self.drop = nn.Dropout(dropout)

    def forward(self, streams: dict[str, Tensor], masks: dict[str, Tensor] | dict[str, Packing], index: int,
                return_attention: bool) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``streams {m: (B, L_m, width)}`` with ``masks {m: (B, L_m)}``, or packed: ``{m: (T_m, width)}``
        with ``{m: Packing}`` (no maps)."""
        maps: dict[str, Tensor] = {}
        updated = {}
        for name, x in streams.items():
            packing = masks[name] if isinstance(masks[name], Packing) else None
            contexts = {o: (streams[o], masks[o]) for o in streams if o != name}
            update, probs = self.cross[name](x, contexts, need_weights=return_attention, packing=packing)
            maps.update({f"{name}->{o}/layer{index}": p for o, p in probs.items()})
            mask = None if packing is not None else masks[name]
            updated[name], self_probs = checkpointed(self.blocks[name], x + self.drop(update), mask, return_attention,
                                                     packing=packing)
            if self_probs is not None:
                maps[f"{name}->{name}/layer{index}"] = self_probs
        return updated, maps


@register("co_attention")
class CoAttentionFusion(Fusion):
    """Two-stream co-attention: ``depth`` layers in which every stream attends to the others, then to itself.

    LXMERT (Tan & Bansal, "LXMERT: Learning Cross-Modality Encoder Representations from
    Transformers", EMNLP 2019) cross-modality layers, as also used by METER (Dou et al., "An
    Empirical Study of Training End-to-End Vision-and-Language Transformers", CVPR 2022). Each
    modality is projected to ``width`` and keeps separate weights. For ``M > 2`` modalities each
    stream attends to every other stream with its own cross-attention and averages the updates.

    Output: ``pooled = W [mean(stream_1); ...; mean(stream_M)]`` (masked means, as METER
    concatenates both streams' summaries); ``tokens`` = all streams concatenated.

    Padding: masked as keys in self- and cross-attention; padded outputs are zero.

    Missing modalities: an absent stream is replaced by one learned [MISSING] token (valid), which
    still attends to the present streams; as a *context* an absent modality's (garbage) tokens are
    never used -- other streams attend to the [MISSING] token instead, which carries no sample data.

    Attention maps: ``"{m}->{o}/layer{i}"`` (cross) and ``"{m}->{m}/layer{i}"`` (self).

    Packed execution (``packing=True``, docs/packing.md): every stream's valid tokens (or its
    [MISSING] token) are gathered once (:mod:`polyfuse.fusion.packed`); self- and cross-attention run
    on ``cu_seqlens`` (different ones for queries and keys) and only the outputs are scattered back;
    outputs equal the padded path's. ``return_attention=True`` runs the padded path.

    Args:
        dims, out_dim: see :class:`Fusion`. width: stream width (default ``out_dim``).
        depth, heads, mlp_ratio, dropout: layer options.
        packing: run packed (see above); off by default, outputs identical either way.
    """

    min_modalities = 2

    def __init__(self, dims: Mapping[str, int], out_dim: int, width: int | None = None, depth: int = 2,
                 heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.1, packing: bool = False) -> None:
        super().__init__(dims, out_dim)
        self.packing = bool(packing)
        width = width or out_dim
        self.proj = nn.ModuleDict({m: nn.Linear(d, width) for m, d in self.dims.items()})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(width) * 0.02) for m in self.dims})
        self.layers = nn.ModuleList([CoAttentionLayer(self.modalities, width, heads, mlp_ratio, dropout)
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.pool = nn.Linear(len(self.dims) * width, out_dim)
        self.out = nn.Linear(width, out_dim)

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        if self.packing and not return_attention and worth_packing(inputs):
            return self.fuse_packed(inputs)
        streams, masks = {}, {}
        for name, encoded in inputs.items():
            streams[name], masks[name] = substitute_missing_token(
                self.proj[name](encoded.tokens), encoded.mask, encoded.present_or_full(), self.missing[name])
        maps: dict[str, Tensor] = {}
        for index, layer in enumerate(self.layers):
            streams, layer_maps = layer(streams, masks, index, return_attention)
            maps.update(layer_maps)
        normed = {m: self.norm(x) for m, x in streams.items()}
        pooled = self.pool(torch.cat([masked_mean(normed[m], masks[m]) for m in self.modalities], dim=-1))
        mask = torch.cat([masks[m] for m in self.modalities], dim=1)
        tokens = zero_invalid(self.out(torch.cat([normed[m] for m in self.modalities], dim=1)), mask)
        return FusionOutput(pooled=pooled, tokens=tokens, mask=mask, attentions=maps)

    def fuse_packed(self, inputs: dict[str, Encoded]) -> FusionOutput:
        """:meth:`fuse` on the valid tokens only (see the class docstring); same outputs, no maps."""
        packed, masks = {}, {}
        for name, encoded in inputs.items():
            packed[name], masks[name] = gather_with_missing_token(
                encoded.tokens, encoded.mask, encoded.present_or_full(), self.proj[name], self.missing[name])
        streams = {m: p.rows for m, p in packed.items()}
        packings = {m: p.packing for m, p in packed.items()}
        for index, layer in enumerate(self.layers):
            streams, _ = layer(streams, packings, index, False)
        normed = {m: self.norm(x) for m, x in streams.items()}
        pooled = self.pool(torch.cat([masked_mean(packed[m].scatter(normed[m]), masks[m]) for m in self.modalities],
                                     dim=-1))
        tokens = torch.cat([packed[m].scatter(self.out(normed[m])) for m in self.modalities], dim=1)
        mask = torch.cat([masks[m] for m in self.modalities], dim=1)
        return FusionOutput(pooled=pooled, tokens=tokens, mask=mask)

"""Cross-attention fusion: the tokens of one (query) modality attend to the tokens of the others."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.blocks import FeedForward, MultiContextAttention
from polyfuse.fusion.masking import masked_mean, substitute_missing_token, zero_invalid
from polyfuse.fusion.packed import gather_valid, gather_with_missing_token, worth_packing


@register("cross_attention")
class CrossAttentionFusion(Fusion):
    """``depth`` layers of ``q <- q + mean_m CrossAttn(q, x_m)``, ``q <- q + FFN(q)`` for a query modality.

    The query modality's tokens (projected to ``width``) attend, in each layer, to every other
    modality with its own pre-norm cross-attention (keys/values keep their input width), and the
    per-context updates are averaged. The encoder-decoder attention of Vaswani et al., "Attention
    Is All You Need", NeurIPS 2017, used as a fusion as in the cross-modal attention of
    Lu, Batra, Parikh & Lee, "ViLBERT", NeurIPS 2019 (one direction only; see
    :class:`CoAttentionFusion` for both). Any number ``>= 2`` of modalities.

    Output: the updated query tokens ``(B, L_query, out_dim)`` and their masked mean.

    Padding: context padding is masked as keys; query padding stays masked (zero outputs).

    Missing modalities: an absent *context* modality contributes no update for that sample and the
    average runs over the present contexts only (renormalised). An absent *query* modality is
    replaced by one learned [MISSING] query token, which then reads the present contexts (like a
    [CLS] token); a sample with nothing present keeps that token unchanged by attention.

    Attention maps: ``"{query}->{context}/layer{i}"``, ``(B, H, L_query, L_context)``.

    Packed execution (``packing=True``, docs/packing.md): the valid query tokens (with the [MISSING]
    token of absent samples) and each context's valid tokens are gathered once
    (:mod:`polyfuse.fusion.packed`); cross-attention runs with different ``cu_seqlens`` for queries
    and keys, and only the output tokens are scattered back; outputs equal the padded path's.
    ``return_attention=True`` runs the padded path (maps are in the padded layout).

    Args:
        dims, out_dim: see :class:`Fusion`. query: the querying modality (default: the first).
        width: query width (default ``out_dim``). depth, heads, mlp_ratio, dropout: layer options.
        packing: run packed (see above); off by default, outputs identical either way.
    """

    min_modalities = 2

    def __init__(self, dims: Mapping[str, int], out_dim: int, query: str | None = None, width: int | None = None,
                 depth: int = 2, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.1,
                 packing: bool = False) -> None:
        super().__init__(dims, out_dim)
        self.packing = bool(packing)
        self.query = self.modalities[0] if query is None else query
        if self.query not in self.dims:
            raise ValueError(f"CrossAttentionFusion query {self.query!r} is not one of the modalities {self.modalities}")
        width = width or out_dim
        self.contexts = {m: d for m, d in self.dims.items() if m != self.query}
        self.query_proj = nn.Linear(self.dims[self.query], width)
        self.missing_query = nn.Parameter(torch.randn(width) * 0.02)
        self.cross = nn.ModuleList([MultiContextAttention(width, self.contexts, heads, dropout) for _ in range(depth)])
        self.ffn = nn.ModuleList([FeedForward(width, mlp_ratio, dropout) for _ in range(depth)])
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_dim)

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        if self.packing and not return_attention and worth_packing(inputs):
            return self.fuse_packed(inputs)
        query = inputs[self.query]
        x, mask = substitute_missing_token(self.query_proj(query.tokens), query.mask, query.present_or_full(),
                                           self.missing_query)
        contexts = {m: (inputs[m].tokens, inputs[m].mask) for m in self.contexts}
        maps = {}
        for index, (cross, ffn) in enumerate(zip(self.cross, self.ffn)):
            update, probs = cross(x, contexts, need_weights=return_attention)
            x = ffn(x + self.drop(update))
            maps.update({f"{self.query}->{m}/layer{index}": p for m, p in probs.items()})
        tokens = zero_invalid(self.out(self.norm(x)), mask)
        return FusionOutput(pooled=masked_mean(tokens, mask), tokens=tokens, mask=mask, attentions=maps)

    def fuse_packed(self, inputs: dict[str, Encoded]) -> FusionOutput:
        """:meth:`fuse` on the valid tokens only (see the class docstring); same outputs, no maps."""
        query = inputs[self.query]
        packed, mask = gather_with_missing_token(query.tokens, query.mask, query.present_or_full(), self.query_proj,
                                                 self.missing_query)
        contexts = {m: (p.rows, p.packing) for m, p in
                    ((m, gather_valid(inputs[m].tokens, inputs[m].mask)) for m in self.contexts)}
        x = packed.rows
        for cross, ffn in zip(self.cross, self.ffn):
            update, _ = cross(x, contexts, packing=packed.packing)
            x = ffn(x + self.drop(update))
        tokens = packed.scatter(self.out(self.norm(x)))
        return FusionOutput(pooled=masked_mean(tokens, mask), tokens=tokens, mask=mask)

"""Layers shared by the token-level fusions: projection to a common width, masked cross-attention, FFN.

All attention goes through :class:`polyfuse.layers.MultiHeadAttention` (so every backend and
kernel applies). Cross-attention here has one extra guarantee over the raw layer: a query whose
context has no valid key (an absent modality) receives *no update at all* (not the output
projection's bias), so an absent context is exactly equivalent to having no such context.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.attention.varlen import Packing
from polyfuse.batch import Encoded
from polyfuse.checkpointing import checkpointed
from polyfuse.layers import Mlp, MultiHeadAttention

__all__ = ["ModalityProjection", "ContextAttention", "MultiContextAttention", "FeedForward", "run_blocks"]


class ModalityProjection(nn.Module):
    """Per-modality ``Linear(D_m, width)`` of every token, plus a learned modality-type embedding.

    The type embedding (as the token-type / modality-type embeddings of VL-BERT and ViLT) tells a
    shared transformer which modality a token came from. Input tokens must be sanitised (zeros at
    invalid positions); invalid positions of the output hold ``bias + type`` and must stay masked.
    ``project=False`` keeps the tokens as they are (every ``D_m == width``) and only adds the type.
    """

    def __init__(self, dims: Mapping[str, int], width: int, type_embedding: bool = True,
                 project: bool = True) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Linear(d, width) if project else nn.Identity() for m, d in dims.items()})
        self.type_embedding = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(width) * 0.02) for m in dims}) if type_embedding else None

    def forward(self, inputs: Mapping[str, Encoded]) -> dict[str, Tensor]:
        """``{m: Encoded (B, L_m, D_m)}`` -> ``{m: (B, L_m, width)}``."""
        return {name: self.project(name, encoded.tokens) for name, encoded in inputs.items()}

    def project(self, name: str, tokens: Tensor) -> Tensor:
        """Modality ``name``'s tokens ``(..., D_m)`` -> ``(..., width)``: padded ``(B, L_m, D_m)`` or packed rows."""
        tokens = self.proj[name](tokens)
        return tokens if self.type_embedding is None else tokens + self.type_embedding[name]


class ContextAttention(nn.Module):
    """Pre-norm cross-attention update ``attn(LN(x), LN(context))`` (no residual added here).

    Args:
        dim: query width. heads: attention heads. context_dim: context width (default ``dim``).
        dropout: attention-probability dropout.

    ``forward(x (B, Lq, dim), context (B, Lk, context_dim), context_mask (B, Lk))`` returns
    ``(update (B, Lq, dim), probs (B, H, Lq, Lk) | None)``; samples whose context has no valid key
    get a zero update and all-zero probabilities.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        context_dim = dim if context_dim is None else context_dim
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim)
        self.attn = MultiHeadAttention(dim, heads, kv_dim=context_dim, dropout=dropout)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None,
                need_weights: bool = False, *, packing: Packing | None = None,
                context_packing: Packing | None = None) -> tuple[Tensor, Tensor | None]:
        """Packed: ``x (Tq, dim)`` with its ``packing``, ``context (Tk, context_dim)`` with ``context_packing``
        and ``context_mask=None`` -> ``(update (Tq, dim), None)``."""
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        if packing is not None:
            if context_packing is None or context_mask is not None:
                raise ValueError("a packed ContextAttention call takes packing and context_packing, no mask")
            if context.shape[0] == 0:  # no sample has a key: no update at all
                return torch.zeros_like(x), None
            update, _ = self.attn(self.norm_query(x), self.norm_context(context), packing=packing,
                                  context_packing=context_packing)
            has_key = (context_packing.lengths() > 0)[packing.sequence_ids()][:, None]
            return torch.where(has_key, update, zero), None
        update, probs = self.attn(self.norm_query(x), self.norm_context(context), key_padding_mask=context_mask,
                                  need_weights=need_weights)
        has_key = context_mask.any(dim=1)[:, None, None]
        return torch.where(has_key, update, zero), probs


class MultiContextAttention(nn.Module):
    """One :class:`ContextAttention` per context modality; updates averaged over the *present* contexts.

    ``update = sum_m [m present] * attn_m(x, context_m) / max(1, #present)`` per sample, so an absent
    modality neither contributes nor dilutes the others (renormalised averaging).

    Args:
        dim: query width. contexts: context modality -> width. heads, dropout: see :class:`ContextAttention`.
    """

    def __init__(self, dim: int, contexts: Mapping[str, int], heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attend = nn.ModuleDict({m: ContextAttention(dim, heads, d, dropout) for m, d in contexts.items()})

    def forward(self, x: Tensor, contexts: Mapping[str, tuple[Tensor, Tensor]] | Mapping[str, tuple[Tensor, Packing]],
                need_weights: bool = False, *, packing: Packing | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """``contexts: {m: (tokens (B, Lm, Dm), mask (B, Lm))}`` -> ``(update (B, Lq, dim), {m: probs})``.

        Packed: ``x (Tq, dim)`` with its ``packing`` and ``contexts: {m: (rows (Tm, Dm), Packing)}``
        -> ``(update (Tq, dim), {})``."""
        total = torch.zeros_like(x)
        count = x.new_zeros(x.shape[0], 1) if packing is not None else x.new_zeros(x.shape[0], 1, 1)
        maps: dict[str, Tensor] = {}
        for name, attend in self.attend.items():
            tokens, mask = contexts[name]
            if isinstance(mask, Packing):
                update, probs = attend(x, tokens, None, packing=packing, context_packing=mask)
                has_key = (mask.lengths() > 0)[packing.sequence_ids()][:, None]
            else:
                update, probs = attend(x, tokens, mask, need_weights)
                has_key = mask.any(dim=1)[:, None, None]
            total = total + update  # zero for samples without a valid key
            count = count + has_key.to(x.dtype)
            if probs is not None:
                maps[name] = probs
        return total / count.clamp_min(1.0), maps


class FeedForward(nn.Module):
    """Pre-norm residual MLP ``x + MLP(LN(x))`` (the transformer feed-forward sub-layer)."""

    def __init__(self, dim: int, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, max(1, int(dim * mlp_ratio)), dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm(x))


def run_blocks(blocks: nn.ModuleList, x: Tensor, mask: Tensor | None, name: str,
               need_weights: bool, packing: Packing | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Transformer blocks (:class:`~polyfuse.layers.TransformerBlock`) in sequence, ``x (B, L, D)``, mask ``(B, L)``;
    packed: ``x (T, D)``, ``mask=None`` and the ``packing``.

    Returns ``(x, maps)``: each block's probabilities ``(B, H, L, L)`` when ``need_weights``, named
    by ``name`` with ``{i}`` replaced by the block index.
    """
    maps: dict[str, Tensor] = {}
    for index, block in enumerate(blocks):
        x, probs = checkpointed(block, x, mask, need_weights, packing=packing)
        if probs is not None:
            maps[name.replace("{i}", str(index))] = probs
    return x, maps

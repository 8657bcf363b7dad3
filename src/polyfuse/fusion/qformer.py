"""Q-Former connector: learned queries that self-attend and cross-attend to one modality (BLIP-2)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.fusion.base import register
from polyfuse.fusion.blocks import ContextAttention, FeedForward
from polyfuse.fusion.connectors import Connector
from polyfuse.layers import TransformerBlock


class QFormerLayer(nn.Module):
    """One Q-Former layer on the queries: self-attention block, cross-attention to the features, FFN.

    Pre-norm throughout (BLIP-2's BERT layers are post-norm; pre-norm trains more stably from
    scratch). ``cross`` is ``False`` for the layers BLIP-2 runs without cross-attention
    (``cross_attention_freq``).
    """

    def __init__(self, width: int, context_dim: int, heads: int, mlp_ratio: float, dropout: float,
                 cross: bool) -> None:
        super().__init__()
        self.self_block = TransformerBlock(width, heads, mlp_ratio, dropout, norm="pre")
        self.cross = ContextAttention(width, heads, context_dim, dropout) if cross else None
        self.ffn = FeedForward(width, mlp_ratio, dropout) if cross else None

    def forward(self, queries: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        """``queries (B, Q, W)``, ``context (B, L, D)``, ``context_mask (B, L)`` -> ``(B, Q, W)``."""
        queries, _ = self.self_block(queries)
        if self.cross is not None and self.ffn is not None:
            update, _ = self.cross(queries, context, context_mask)
            queries = self.ffn(queries + update)
        return queries


@register("qformer_connector")
class QFormerConnector(Connector):
    """``Q`` learned queries per modality through a small transformer, then ``Linear`` to the LM width.

    Li, Li, Savarese & Hoi, "BLIP-2: Bootstrapping Language-Image Pre-training with Frozen Image
    Encoders and Large Language Models", ICML 2023. Each layer: query self-attention, cross-attention
    to the (frozen) encoder tokens every ``cross_attention_freq`` layers, FFN; the ``Q`` outputs go
    through ``LayerNorm -> Linear(width, out_dim)`` (BLIP-2's ``language_projection``) and become the
    modality's soft prompt. BLIP-2's text branch (ITC / ITG pre-training) is not part of the connector.

    Padding: padded tokens are masked keys. Missing modalities: an absent sample's queries get no
    cross-attention update and its output is masked (``present=False``), never spliced.

    Args:
        dims: modality -> encoder width. out_dim: LM hidden size. queries: ``Q`` (BLIP-2: 32).
        width: query width (default ``out_dim``). depth: layers. heads, mlp_ratio, dropout.
        cross_attention_freq: cross-attention in every ``k``-th layer (BLIP-2: 2), starting with the first.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, queries: int = 32, width: int | None = None,
                 depth: int = 2, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0,
                 cross_attention_freq: int = 1) -> None:
        super().__init__(dims, out_dim)
        width = width or out_dim
        if cross_attention_freq < 1:
            raise ValueError(f"qformer cross_attention_freq must be >= 1, got {cross_attention_freq}")
        self.queries = nn.ParameterDict({m: nn.Parameter(torch.randn(queries, width) * 0.02) for m in self.dims})
        self.layers = nn.ModuleDict({
            m: nn.ModuleList([QFormerLayer(width, d, heads, mlp_ratio, dropout, cross=i % cross_attention_freq == 0)
                              for i in range(depth)])
            for m, d in self.dims.items()})
        self.norm = nn.ModuleDict({m: nn.LayerNorm(width) for m in self.dims})
        self.language_projection = nn.ModuleDict({m: nn.Linear(width, out_dim) for m in self.dims})

    def project(self, name: str, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        queries = self.queries[name].expand(tokens.shape[0], -1, -1)
        for layer in self.layers[name]:
            queries = layer(queries, tokens, mask)
        out = self.language_projection[name](self.norm[name](queries))
        return out, torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)

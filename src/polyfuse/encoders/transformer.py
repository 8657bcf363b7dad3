"""What the transformer encoders (ViT, BERT-style text, CLIP text) share: a stack of transformer
blocks (:class:`~polyfuse.layers.TransformerBlock`) whose attention maps are returned, never kept.

``polyfuse.encoders.transformer.TransformerBlock`` stays importable from here: it is a documented
config path (``trainer.strategy.unit_classes``, docs/scaling.md) that saved run configs may name;
the block itself lives in :mod:`polyfuse.layers`.
"""

from __future__ import annotations

from torch import Tensor, nn

from polyfuse.checkpointing import checkpointed
from polyfuse.encoders.base import Encoder
from polyfuse.layers import TransformerBlock

__all__ = ["TransformerEncoder", "TransformerBlock"]


class TransformerEncoder(Encoder):
    """An :class:`Encoder` whose body is ``self.blocks``, an ``nn.ModuleList`` of transformer blocks.

    Subclasses implement :meth:`encode_with_attention`; :meth:`encode` (the encoder contract) is
    the same computation without the maps. ``grad_checkpointing`` recomputes each block in backward.
    """

    blocks: nn.ModuleList

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        tokens, mask, _ = self.encode_with_attention(values, mask, need_weights=False)
        return tokens, mask

    def encode_with_attention(self, values: Tensor, mask: Tensor | None,
                              need_weights: bool = True) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """:meth:`encode` plus each block's self-attention ``(B, H, L, L)``, input to output order
        (``[]`` unless ``need_weights``)."""
        raise NotImplementedError

    def forward_blocks(self, x: Tensor, mask: Tensor | None, need_weights: bool) -> tuple[Tensor, list[Tensor]]:
        """``x (B, L, D)`` through every block with key padding mask ``(B, L)``; ``(x, maps)``."""
        maps = []
        for block in self.blocks:
            x, probs = checkpointed(block, x, mask, need_weights=need_weights)
            if probs is not None:
                maps.append(probs)
        return x, maps

    def blocks_for_freezing(self) -> list[nn.Module]:
        return list(self.blocks)

    def checkpoint_blocks(self) -> list[nn.Module]:
        return list(self.blocks)

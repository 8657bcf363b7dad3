"""What the transformer encoders (ViT, BERT-style text, CLIP text) share: a stack of transformer
blocks (:class:`~polyfuse.layers.TransformerBlock`) whose attention maps are returned, never kept.

``polyfuse.encoders.transformer.TransformerBlock`` stays importable from here: it is a documented
config path (``trainer.strategy.unit_classes``, docs/scaling.md) that saved run configs may name;
the block itself lives in :mod:`polyfuse.layers`.
"""

from __future__ import annotations

from torch import Tensor, nn

from polyfuse.attention.varlen import Packing
from polyfuse.checkpointing import checkpointed
from polyfuse.encoders.base import Encoder
from polyfuse.layers import TransformerBlock

__all__ = ["TransformerEncoder", "TransformerBlock"]


class TransformerEncoder(Encoder):
    """An :class:`Encoder` whose body is ``self.blocks``, an ``nn.ModuleList`` of transformer blocks.

    Subclasses implement :meth:`encode_with_attention`; :meth:`encode` (the encoder contract) is
    the same computation without the maps. ``grad_checkpointing`` recomputes each block in backward.

    Packed ("unpad once") execution, when :attr:`packing` is set: :meth:`packing_for` describes where
    the real tokens of a prefix padding mask sit; a subclass embeds only those tokens ``(T, D)``, runs
    every block packed (:meth:`forward_blocks` with ``packing``: norms, MLPs and residuals on ``T``
    rows, attention within each sample) and pads back once at the output. Outputs and gradients equal
    the padded path's; padded outputs are exact zeros either way.
    """

    blocks: nn.ModuleList
    packing: bool = False

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        tokens, mask, _ = self.encode_with_attention(values, mask, need_weights=False)
        return tokens, mask

    def encode_with_attention(self, values: Tensor, mask: Tensor | None,
                              need_weights: bool = True) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """:meth:`encode` plus each block's self-attention ``(B, H, L, L)``, input to output order
        (``[]`` unless ``need_weights``)."""
        raise NotImplementedError

    def packing_for(self, mask: Tensor | None, need_weights: bool = False) -> Packing | None:
        """Where the real tokens of ``mask (B, L)`` sit when this call runs packed, else ``None``.

        The padded path runs when packing is off, when attention maps are asked for (they are
        ``(B, H, L, L)``), or when no token is padding (``mask`` is ``None`` or all ``True``: packing
        would skip nothing).

        Raises:
            ValueError: naming the modality (:attr:`modality`, else the class) and the sample when
                ``mask`` is not a prefix (a real token after padding).
        """
        if not self.packing or need_weights or mask is None:
            return None
        packing = Packing.from_mask(mask, name=self.input_name())
        return None if packing.total == mask.numel() else packing

    def forward_blocks(self, x: Tensor, mask: Tensor | None, need_weights: bool,
                       packing: Packing | None = None) -> tuple[Tensor, list[Tensor]]:
        """``x (B, L, D)`` through every block with key padding mask ``(B, L)``; ``(x, maps)``.
        Packed: ``x (T, D)`` with its ``packing`` (and ``mask=None``) -> ``(x (T, D), maps)``."""
        maps = []
        for block in self.blocks:
            x, probs = checkpointed(block, x, mask, need_weights=need_weights, packing=packing)
            if probs is not None:
                maps.append(probs)
        return x, maps

    def blocks_for_freezing(self) -> list[nn.Module]:
        return list(self.blocks)

    def checkpoint_blocks(self) -> list[nn.Module]:
        return list(self.blocks)

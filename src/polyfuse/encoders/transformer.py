"""What the transformer encoders (ViT, BERT-style text, CLIP text) share: a stack of transformer
blocks (:class:`~polyfuse.layers.TransformerBlock`) whose attention maps are returned, never kept.

``polyfuse.encoders.transformer.TransformerBlock`` stays importable from here: it is a documented
config path (``trainer.strategy.unit_classes``, docs/scaling.md) that saved run configs may name;
the block itself lives in :mod:`polyfuse.layers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from torch import Tensor, nn

from polyfuse.attention.varlen import Packing
from polyfuse.checkpointing import checkpointed
from polyfuse.encoders.base import Encoder
from polyfuse.layers import TransformerBlock

if TYPE_CHECKING:
    from polyfuse.data.packing import PackedRows

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

    Sample packing (:attr:`sample_packing` ``{budget, strategy, rows}``, training steps only): the
    batch's texts are packed whole into fixed-width rows of ``budget`` tokens
    (:func:`~polyfuse.data.packing.pack_masked`), :meth:`forward_rows` runs the rows with attention
    within each text and positions restarting in each, and the tokens are unpacked to ``(B, L, D)``:
    the same outputs and gradients, on a fixed row width (a fixed shape with ``rows``). Subclasses
    that run packed implement :meth:`embed_packed` (and :meth:`finish_packed` for a final norm).
    """

    blocks: nn.ModuleList
    packing: bool = False
    sample_packing: dict[str, Any] | None = None

    def set_sample_packing(self, options: Mapping[str, Any] | None) -> None:
        """Check and set :attr:`sample_packing` (``None``: off)."""
        from polyfuse.data.packing import sample_packing_spec

        self.sample_packing = sample_packing_spec(options, type(self).__name__)

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

    def embed_packed(self, ids: Tensor, positions: Tensor) -> Tensor:
        """Token ids ``(T,)`` at ``positions (T,)`` (each token's index in its own sample) -> ``(T, D)``."""
        raise NotImplementedError(f"{type(self).__name__} does not run packed")

    def finish_packed(self, x: Tensor) -> Tensor:
        """What follows the blocks on packed rows ``(T, D)`` (a final norm); identity here."""
        return x

    def encode_packed(self, values: Tensor, mask: Tensor | None, need_weights: bool) -> Tensor | None:
        """``(B, L, D)`` tokens from a packed run of ``values (B, L)``, or ``None`` for the padded path.

        In training with :attr:`sample_packing` set, the texts run sample-packed in fixed-width rows
        (:meth:`forward_rows`); otherwise, with :attr:`packing`, unpadded (:meth:`packing_for`). Neither
        runs when attention maps are asked for or nothing is padding. Padded positions are zeros.
        """
        if self.sample_packing is not None and self.training and not need_weights and mask is not None \
                and not bool(mask.all()):
            from polyfuse.data.packing import pack_masked

            rows = pack_masked(values, mask, name=self.input_name(), **self.sample_packing)
            return rows.unpack(self.forward_rows(rows), values.shape[1])
        packing = self.packing_for(mask, need_weights)
        if packing is None:
            return None
        x = self.embed_packed(packing.unpad(values), packing.position_ids())
        x, _ = self.forward_blocks(x, None, False, packing)
        return packing.pad(self.finish_packed(x))

    def forward_rows(self, rows: PackedRows) -> Tensor:
        """Whole fixed-width packed rows (:class:`~polyfuse.data.packing.PackedRows`) -> ``(R, budget, D)``.

        Row padding included (a fixed shape): :meth:`PackedRows.segments` cuts the rows into the
        samples and each row's padding tail, so a token attends within its own sample only and its
        position counts from its sample's start. Each sample's tokens equal the padded encoder's on
        that sample alone; slots without a token hold finite values nothing should read
        (:meth:`PackedRows.unpack` drops them). The collator's rows (MLM labels aligned with the
        tokens) or :func:`~polyfuse.data.packing.pack_masked`'s feed it directly.
        """
        packing, _ = rows.segments()
        x = self.embed_packed(rows.input_ids.reshape(-1), rows.position_ids.reshape(-1))
        x, _ = self.forward_blocks(x, None, False, packing)
        return self.finish_packed(x).view(*rows.input_ids.shape, -1)

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

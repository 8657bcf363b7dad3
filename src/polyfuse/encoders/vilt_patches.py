"""ViLT's image embedding: patches of any size, interpolated positions, a pixel mask and patch sampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.encoders.base import Encoder
from polyfuse.encoders.vision import PatchEmbed


class ViLTPatchEncoder(Encoder):
    """Linear patch embedding of ViLT (Kim, Son & Kim, "ViLT: Vision-and-Language Transformer Without
    Convolution or Region Supervision", ICML 2021): ``[CLS] + patches + positions``, no transformer.

    Unlike :class:`~polyfuse.encoders.vision.ViTEncoder`, images may have any size: the learned
    ``grid x grid`` position table (for ``image_size``) is resized bilinearly
    (``align_corners=True``) to each image's valid patch grid. ``pixel_mask (B, H, W)`` (1 = real
    pixel, the valid region at the top left, as the ViLT processor pads) is downsampled to a patch
    mask; padded patches get no position and are masked.

    Patch sampling (as the reference implementation and Hugging Face ``ViltEmbeddings``): the
    image keeps ``n = min(max valid patches in the batch, max_image_length)`` patch tokens
    (``max_image_length < 0``: no limit). An image with at least ``n`` valid patches keeps ``n`` of
    them drawn at random without replacement (from torch's global CPU generator, so a seed makes
    it reproducible; training and evaluation alike); one with fewer keeps all of them, followed by
    padded patches drawn with replacement and masked out.

    Output tokens ``(B, 1 + n, dim)`` with mask ``(B, 1 + n)``; the [CLS] token is always valid.
    Parameter names: ``patch_embed.proj``, ``cls_token``, ``pos_embed`` (as the ViT).

    Args:
        image_size: the size the position table was learned for. patch_size, in_chans, dim.
        max_image_length: patch tokens kept per image (``-1``: all). dropout: after adding positions.
    """

    def __init__(self, image_size: int = 384, patch_size: int = 32, in_chans: int = 3, dim: int = 768,
                 max_image_length: int = -1, dropout: float = 0.0) -> None:
        super().__init__(dim, "tokens", None, has_cls=True)
        self.image_size, self.patch_size, self.in_chans = image_size, patch_size, in_chans
        self.max_image_length = max_image_length
        self.patch_embed = PatchEmbed(image_size, patch_size, in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.patch_embed.num_patches, dim) * 0.02)
        self.pos_drop = nn.Dropout(dropout)

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """``values: (B, C, H, W)`` (``mask`` is the sequence mask of the batch contract: unused)."""
        return self.embed(values, None)

    def embed(self, pixel_values: Tensor, pixel_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``pixel_values (B, C, H, W)``, ``pixel_mask (B, H, W)`` -> ``(tokens (B, 1 + n, D), mask (B, 1 + n))``."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.in_chans:
            raise ValueError(f"ViLTPatchEncoder expects images (B, {self.in_chans}, H, W), "
                             f"got {tuple(pixel_values.shape)}")
        patches = self.patch_embed.proj(pixel_values.to(self.patch_embed.proj.weight.dtype))  # (B, D, gh, gw)
        batch, dim, grid_h, grid_w = patches.shape
        if pixel_mask is None:
            patch_mask = torch.ones(batch, grid_h, grid_w, dtype=torch.long, device=patches.device)
        else:
            patch_mask = F.interpolate(pixel_mask[:, None].float(), size=(grid_h, grid_w)).long()[:, 0]
        valid_h, valid_w = patch_mask[:, :, 0].sum(dim=1), patch_mask[:, 0, :].sum(dim=1)  # (B,), (B,)
        positions = self._positions(valid_h, valid_w, grid_h, grid_w)  # (B, gh * gw, D)
        tokens = patches.flatten(2).transpose(1, 2)  # (B, gh * gw, D)
        flat_mask = patch_mask.flatten(1)
        rows, cols = self._sample(flat_mask, valid_h * valid_w)
        tokens = tokens[rows, cols] + positions[rows, cols]  # (B, n, D)
        kept_mask = flat_mask[rows, cols].bool()
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(batch, -1, -1)
        tokens = self.pos_drop(torch.cat([cls, tokens], dim=1))
        return tokens, torch.cat([kept_mask.new_ones(batch, 1), kept_mask], dim=1)

    def _positions(self, valid_h: Tensor, valid_w: Tensor, grid_h: int, grid_w: int) -> Tensor:
        """Per image, the position table resized to its valid grid and zero-padded to ``(gh, gw)``."""
        grid = self.patch_embed.grid
        table = self.pos_embed[:, 1:].transpose(1, 2).reshape(1, -1, grid, grid)  # (1, D, g, g)
        sizes = torch.stack([valid_h, valid_w], dim=1).tolist()
        resized: dict[tuple[int, int], Tensor] = {}
        for h, w in {tuple(size) for size in sizes}:
            grid_hw = F.interpolate(table, size=(h, w), mode="bilinear", align_corners=True)
            resized[(h, w)] = F.pad(grid_hw, (0, grid_w - w, 0, grid_h - h))
        per_image = torch.cat([resized[tuple(size)] for size in sizes], dim=0)  # (B, D, gh, gw)
        return per_image.flatten(2).transpose(1, 2)

    def _sample(self, flat_mask: Tensor, valid_counts: Tensor) -> tuple[Tensor, Tensor]:
        """``(rows, cols)`` index tensors ``(B, n)`` of the kept patches (see the class docstring)."""
        length = int(valid_counts.max())
        if self.max_image_length is not None and self.max_image_length >= 0:
            length = min(length, self.max_image_length)
        selected = []
        for row in flat_mask.bool().cpu():  # one draw per image, in the reference's order
            valid, invalid = row.nonzero().squeeze(1), (~row).nonzero().squeeze(1)
            if valid.numel() >= length:
                selected.append(valid[torch.multinomial(torch.ones(valid.numel()), length)])
            else:
                pad = torch.multinomial(torch.ones(invalid.numel()), length - valid.numel(), replacement=True)
                selected.append(torch.cat([valid, invalid[pad]]))
        cols = torch.stack(selected).to(flat_mask.device)
        rows = torch.arange(cols.shape[0], device=cols.device)[:, None].expand_as(cols)
        return rows, cols

    def stem_modules(self) -> list[nn.Module]:
        return [self.patch_embed]

    def freeze(self, blocks: int | bool = True) -> None:
        super().freeze(blocks)
        if blocks is not False and blocks != 0:
            for param in (self.cls_token, self.pos_embed):
                param.requires_grad_(False)

"""Vision Transformer image encoder (Dosovitskiy et al., 2021), timm-style layout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.encoders.base import Encoder, Output, checkpointed
from polyfuse.encoders.transformer import TransformerBlock


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution: ``(B, C, H, W) -> (B, N, D)``."""

    def __init__(self, image_size: int, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.grid = image_size // patch_size
        self.num_patches = self.grid ** 2
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTEncoder(Encoder):
    """ViT: patch embedding + [CLS] + learned positions + pre-norm transformer blocks + final norm.

    Images have no padding, so the token mask is ``None``; an absent image (``present=False``) is
    zeroed at the output. Parameter names follow timm (``patch_embed.proj``, ``cls_token``,
    ``pos_embed``, ``blocks.N``, ``norm``) so checkpoints map one to one.

    Args:
        image_size, patch_size, in_chans: input geometry. dim, depth, heads, mlp_ratio: size.
        output: ``"tokens"`` (``(B, 1 + N, D)``) or ``"pooled"`` (the [CLS] token).
        proj_dim: optional projection width. grad_checkpointing: recompute blocks in backward.
    """

    def __init__(self, image_size: int = 32, patch_size: int = 4, in_chans: int = 1, dim: int = 64,
                 depth: int = 2, heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 output: Output = "tokens", proj_dim: int | None = None, eps: float = 1e-6,
                 grad_checkpointing: bool = False, freeze: int | bool = False,
                 attention_backend: str | None = None) -> None:
        super().__init__(dim, output, proj_dim, has_cls=True)
        self.image_size, self.in_chans = image_size, in_chans
        self.patch_embed = PatchEmbed(image_size, patch_size, in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.patch_embed.num_patches, dim) * 0.02)
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio, dropout, norm="pre", eps=eps, backend=attention_backend)
            for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.grad_checkpointing = grad_checkpointing
        nn.init.normal_(self.cls_token, std=1e-6)
        self.freeze(freeze)

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, None]:
        if values.dim() != 4 or values.shape[1] != self.in_chans or values.shape[-1] != self.image_size:
            raise ValueError(f"ViTEncoder expects images (B, {self.in_chans}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(values.shape)}")
        x = self.patch_embed(values)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.pos_drop(x)
        for block in self.blocks:
            x = checkpointed(block, self.grad_checkpointing, x)
        return self.norm(x), None

    def stem_modules(self) -> list[nn.Module]:
        return [self.patch_embed]

    def blocks_for_freezing(self) -> list[nn.Module]:
        return list(self.blocks)

    def freeze(self, blocks: int | bool = True) -> None:
        super().freeze(blocks)
        if blocks not in (False, 0):
            self.cls_token.requires_grad_(False)
            self.pos_embed.requires_grad_(False)

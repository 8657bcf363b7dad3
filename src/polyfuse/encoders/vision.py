"""Vision Transformer image encoder (Dosovitskiy et al., 2021), timm-style layout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.encoders.base import Output
from polyfuse.encoders.transformer import TransformerEncoder
from polyfuse.layers import TransformerBlock


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution: ``(B, C, H, W) -> (B, N, D)``."""

    def __init__(self, image_size: int, patch_size: int, in_chans: int, dim: int, bias: bool = True) -> None:
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.grid = image_size // patch_size
        self.num_patches = self.grid ** 2
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class PatchStemFreezing:
    """Freezing of a patch-embedding transformer encoder (mixed in before :class:`Encoder`): the stem is
    ``patch_embed`` + ``norm_pre``, the blocks are ``blocks``, and any partial freeze also freezes the
    learned embeddings named in ``embedding_names``."""

    embedding_names: tuple[str, ...] = ("cls_token", "pos_embed")

    def stem_modules(self) -> list[nn.Module]:
        return [self.patch_embed, self.norm_pre]

    def blocks_for_freezing(self) -> list[nn.Module]:
        return list(self.blocks)

    def freeze(self, blocks: int | bool = True) -> None:
        super().freeze(blocks)
        if blocks is not False and blocks != 0:
            for name in self.embedding_names:
                param = getattr(self, name)
                if param is not None:
                    param.requires_grad_(False)


class ViTEncoder(PatchStemFreezing, TransformerEncoder):
    """ViT: patch embedding + [CLS] + learned positions + pre-norm transformer blocks + final norm.

    Images have no padding, so the token mask is ``None``; an absent image (``present=False``) is
    zeroed at the output. Parameter names follow timm (``patch_embed.proj``, ``cls_token``,
    ``pos_embed``, ``blocks.N``, ``norm``, ``fc_norm``); :mod:`polyfuse.encoders.pretrained` maps
    timm, Hugging Face and open_clip checkpoints onto it.

    Args:
        image_size, patch_size, in_chans: input geometry. dim, depth, heads, mlp_ratio: size.
        output: ``"tokens"`` (``(B, prefix + N, D)``) or ``"pooled"`` (``pool`` token).
        proj_dim: optional projection width (``proj_bias=False`` for CLIP's ``visual.proj``).
        grad_checkpointing: recompute blocks in backward. freeze: ``True`` or first N blocks.
        class_token: prepend a learned [CLS] token (timm ``class_token``).
        pre_norm: LayerNorm before the blocks (CLIP ``ln_pre``).
        final_norm: LayerNorm after the blocks (timm ``norm``, CLIP ``ln_post``).
        norm_after_pool: apply that final norm to the pooled token only (timm ``fc_norm`` when
            ``global_pool='avg'``; CLIP ``final_ln_after_pool``): tokens stay un-normalised.
        pool: ``"cls"`` or ``"mean"`` (over patch tokens). activation: ``gelu`` / ``quick_gelu``.
        patch_bias: bias in the patch convolution (CLIP has none). layer_scale: residual gamma init.
    """

    def __init__(self, image_size: int = 32, patch_size: int = 4, in_chans: int = 1, dim: int = 64,
                 depth: int = 2, heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 output: Output = "tokens", proj_dim: int | None = None, eps: float = 1e-6,
                 grad_checkpointing: bool = False, freeze: int | bool = False,
                 attention_backend: str | None = None, class_token: bool = True, pre_norm: bool = False,
                 final_norm: bool = True, norm_after_pool: bool = False, pool: str | None = None,
                 activation: str = "gelu", patch_bias: bool = True, layer_scale: float | None = None,
                 proj_bias: bool = True) -> None:
        super().__init__(dim, output, proj_dim, has_cls=class_token, pool=pool, proj_bias=proj_bias)
        self.image_size, self.in_chans, self.patch_size = image_size, in_chans, patch_size
        self.num_prefix_tokens = 1 if class_token else 0
        self.patch_embed = PatchEmbed(image_size, patch_size, in_chans, dim, bias=patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_prefix_tokens + self.patch_embed.num_patches, dim) * 0.02)
        self.pos_drop = nn.Dropout(dropout)
        self.norm_pre = nn.LayerNorm(dim, eps=eps) if pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio, dropout, norm="pre", eps=eps, activation=activation,
                             backend=attention_backend, layer_scale=layer_scale)
            for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps) if final_norm and not norm_after_pool else nn.Identity()
        self.fc_norm = nn.LayerNorm(dim, eps=eps) if final_norm and norm_after_pool else nn.Identity()
        self.grad_checkpointing = grad_checkpointing
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        self.freeze(freeze)

    def encode_with_attention(self, values: Tensor, mask: Tensor | None,
                              need_weights: bool = True) -> tuple[Tensor, None, list[Tensor]]:
        """``values: (B, C, H, W)`` -> ``(tokens (B, prefix + N, D), None, maps)``."""
        if values.dim() != 4 or values.shape[1] != self.in_chans or tuple(values.shape[-2:]) != (self.image_size,) * 2:
            raise ValueError(f"ViTEncoder expects images (B, {self.in_chans}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(values.shape)}")
        x = self.patch_embed(values)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm_pre(self.pos_drop(x + self.pos_embed))
        x, maps = self.forward_blocks(x, None, need_weights)
        return self.norm(x), None, maps

    def pool_tokens(self, tokens: Tensor, mask: Tensor | None, values: Tensor) -> Tensor:
        if self.pool == "cls":
            pooled = tokens[:, :1]
        else:
            pooled = tokens[:, self.num_prefix_tokens:].mean(dim=1, keepdim=True)
        return self.fc_norm(pooled)

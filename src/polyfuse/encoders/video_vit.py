"""Space-time ViT over clips: tubelet embedding (ViViT) with joint or divided (TimeSformer) attention.

* Tubelet embedding -- Arnab et al., 2021, "ViViT": a ``t x p x p`` 3-D convolution turns a clip
  ``(B, T, C, H, W)`` into ``T/t x N`` tokens (``t = 1``: per-frame patches).
* Joint attention (ViViT model 1): one sequence of ``1 + T' N`` tokens through ordinary ViT blocks.
* Divided space-time attention -- Bertasius et al., 2021, "Is Space-Time Attention All You Need
  for Video Understanding?" (TimeSformer): in each block, temporal attention among the tokens of
  the same patch position (output through a zero-initialised ``temporal_fc``), then spatial
  attention among the tokens of the same frame with the [CLS] token repeated per frame and averaged
  back, then the MLP.

:meth:`VideoViTEncoder.from_image` inflates a :class:`~polyfuse.encoders.vision.ViTEncoder` (a timm /
open_clip / polyfuse checkpoint loaded into it): the tubelet kernel is the 2-D kernel at the
central time step (``"central"``) or spread evenly over time (``"mean"``), time embeddings start
at zero and temporal attention outputs zero, so on a static clip the divided model computes
exactly what the image model computes on its frame.

Padding: a clip shorter than ``T`` has a ``(B, T)`` frame mask; padding frames are never attended
to, never averaged into [CLS], and come out as zeros with ``False`` in the token mask.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.checkpointing import checkpointed
from polyfuse.encoders.base import Encoder, Output
from polyfuse.layers import MultiHeadAttention, TransformerBlock
from polyfuse.masking import masked_mean, zero_invalid
from polyfuse.encoders.vision import PatchStemFreezing, ViTEncoder

__all__ = ["DividedSpaceTimeBlock", "TubeletEmbed", "VideoViTEncoder", "attendable_keys"]

Attention = Literal["divided", "joint"]
INFLATIONS = ("central", "mean")


class TubeletEmbed(nn.Module):
    """``(B, T, C, H, W)`` -> ``(B, T / t, N, D)`` with a ``t x p x p`` convolution of stride ``t x p x p``."""

    def __init__(self, image_size: int, patch_size: int, tubelet_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.tubelet_size, self.num_patches = tubelet_size, (image_size // patch_size) ** 2
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=kernel, stride=kernel)

    def forward(self, clip: Tensor) -> Tensor:
        x = self.proj(clip.transpose(1, 2))                      # (B, D, T', h, w)
        return x.flatten(3).permute(0, 2, 3, 1)                 # (B, T', N, D)


def attendable_keys(mask: Tensor) -> Tensor:
    """A key mask where rows without any real key (an absent clip) attend to every key instead."""
    return mask | ~mask.any(dim=-1, keepdim=True)


class DividedSpaceTimeBlock(nn.Module):
    """TimeSformer block on ``x: (B, 1 + T N, D)`` ([CLS] first, then frame-major patch tokens).

    ``spatial`` is an ordinary pre-norm ViT block (its attention runs per frame, its MLP on every
    token), so image ViT weights load into it unchanged.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0, eps: float = 1e-6,
                 activation: str = "gelu", backend: str | None = None) -> None:
        super().__init__()
        self.temporal_norm = nn.LayerNorm(dim, eps=eps)
        self.temporal_attn = MultiHeadAttention(dim, heads, backend=backend)
        self.temporal_fc = nn.Linear(dim, dim)
        nn.init.zeros_(self.temporal_fc.weight)
        nn.init.zeros_(self.temporal_fc.bias)
        self.spatial = TransformerBlock(dim, heads, mlp_ratio, dropout, norm="pre", eps=eps, activation=activation,
                                        backend=backend)

    def forward(self, x: Tensor, frame_mask: Tensor) -> Tensor:
        """``x: (B, 1 + T N, D)``, ``frame_mask: (B, T)`` bool (True = real frame) -> ``(B, 1 + T N, D)``."""
        batch, length, dim = x.shape
        frames = frame_mask.shape[1]
        patches_per_frame = (length - 1) // frames
        cls, patches = x[:, :1], x[:, 1:].reshape(batch, frames, patches_per_frame, dim)
        # temporal attention: the tokens of one patch position across the frames
        tube = patches.transpose(1, 2).reshape(batch * patches_per_frame, frames, dim)
        keys = attendable_keys(frame_mask).repeat_interleave(patches_per_frame, dim=0)
        attended, _ = self.temporal_attn(self.temporal_norm(tube), key_padding_mask=keys)
        tube = tube + self.temporal_fc(attended)
        patches = tube.reshape(batch, patches_per_frame, frames, dim).transpose(1, 2)
        # spatial attention: each frame with its own copy of [CLS]
        block = self.spatial
        per_frame = torch.cat([cls[:, None].expand(batch, frames, 1, dim), patches], dim=2)
        per_frame = per_frame.reshape(batch * frames, 1 + patches_per_frame, dim)
        attended, _ = block.attn(block.norm1(per_frame))
        per_frame = (per_frame + block.ls1(block.drop(attended))).reshape(batch, frames, 1 + patches_per_frame, dim)
        cls = masked_mean(per_frame[:, :, 0], frame_mask)[:, None]
        x = torch.cat([cls, per_frame[:, :, 1:].reshape(batch, frames * patches_per_frame, dim)], dim=1)
        return x + block.ls2(block.mlp(block.norm2(x)))


class VideoViTEncoder(PatchStemFreezing, Encoder):
    """ViT over clips ``(B, T, C, H, W)`` + frame mask ``(B, T)`` -> tokens ``(B, 1 + T' N, D)`` + mask.

    Args:
        image_size, patch_size, in_chans: frame geometry. num_frames: the longest clip (time
            embeddings). tubelet_size: frames per token (ViViT tubelets; 1 = per-frame patches).
        attention: ``"divided"`` (TimeSformer) or ``"joint"`` (ViViT model 1).
        dim, depth, heads, mlp_ratio, dropout, eps, activation: block settings (as the ViT).
        pre_norm, final_norm: LayerNorm before / after the blocks (CLIP ``ln_pre`` / ``ln_post``).
        output, proj_dim, proj_bias, pool, freeze, grad_checkpointing: as for every encoder (pool
            ``cls`` / ``mean`` over the real patch tokens).
    """

    embedding_names = ("cls_token", "pos_embed", "time_embed")

    def __init__(self, image_size: int = 32, patch_size: int = 4, in_chans: int = 1, num_frames: int = 8,
                 tubelet_size: int = 1, attention: Attention = "divided", dim: int = 64, depth: int = 2,
                 heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0, eps: float = 1e-6,
                 activation: str = "gelu", pre_norm: bool = False, final_norm: bool = True, output: Output = "tokens",
                 proj_dim: int | None = None, pool: str | None = None, freeze: int | bool = False,
                 grad_checkpointing: bool = False, attention_backend: str | None = None,
                 proj_bias: bool = True) -> None:
        super().__init__(dim, output, proj_dim, has_cls=True, pool=pool, proj_bias=proj_bias)
        if attention not in ("divided", "joint"):
            raise ValueError(f"VideoViTEncoder attention must be 'divided' or 'joint', got {attention!r}")
        if num_frames % tubelet_size != 0:
            raise ValueError(f"num_frames {num_frames} is not a multiple of tubelet_size {tubelet_size}")
        self.image_size, self.patch_size, self.in_chans = image_size, patch_size, in_chans
        self.num_frames, self.tubelet_size, self.attention = num_frames, tubelet_size, attention
        self.patch_embed = TubeletEmbed(image_size, patch_size, tubelet_size, in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.patch_embed.num_patches, dim) * 0.02)
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames // tubelet_size, dim))
        self.pos_drop = nn.Dropout(dropout)
        self.norm_pre = nn.LayerNorm(dim, eps=eps) if pre_norm else nn.Identity()
        settings = dict(mlp_ratio=mlp_ratio, dropout=dropout, eps=eps, activation=activation, backend=attention_backend)
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(dim, heads, **settings) if attention == "divided"
                                    else TransformerBlock(dim, heads, norm="pre", **settings) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps) if final_norm else nn.Identity()
        self.grad_checkpointing = grad_checkpointing
        nn.init.normal_(self.cls_token, std=1e-6)
        self.freeze(freeze)

    def _tubelet_mask(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Pad the clip to a whole number of tubelets; a tubelet is real when any of its frames is."""
        batch, frames = values.shape[:2]
        mask = torch.ones(batch, frames, dtype=torch.bool, device=values.device) if mask is None else mask
        extra = -frames % self.tubelet_size
        if extra:
            values = F.pad(values, (0, 0, 0, 0, 0, 0, 0, extra))
            mask = F.pad(mask, (0, extra))
        return values, mask.view(batch, -1, self.tubelet_size).any(dim=-1)

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """``values: (B, T, C, H, W)``, ``mask: (B, T)`` -> ``(tokens (B, 1 + T' N, D), mask (B, 1 + T' N))``."""
        size = (self.in_chans, self.image_size, self.image_size)
        if values.dim() != 5 or tuple(values.shape[2:]) != size or values.shape[1] > self.num_frames:
            raise ValueError(f"VideoViTEncoder expects clips (B, T <= {self.num_frames}, {size[0]}, {size[1]}, "
                             f"{size[2]}), got {tuple(values.shape)}")
        values, frame_mask = self._tubelet_mask(values, mask)
        tokens = self.patch_embed(values)                                        # (B, T', N, D)
        batch, steps, patches, dim = tokens.shape
        tokens = tokens + self.pos_embed[:, None, 1:] + self.time_embed[:, :steps, None]
        tokens = zero_invalid(tokens, frame_mask)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(batch, -1, -1)
        x = self.norm_pre(self.pos_drop(torch.cat([cls, tokens.reshape(batch, steps * patches, dim)], dim=1)))
        token_mask = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=x.device),
                                frame_mask.repeat_interleave(patches, dim=1)], dim=1)
        for block in self.blocks:
            if self.attention == "divided":
                x = checkpointed(block, x, frame_mask)
            else:
                x, _ = checkpointed(block, x, attendable_keys(token_mask))
        x = zero_invalid(self.norm(x), token_mask)
        return x, token_mask

    def checkpoint_blocks(self) -> list[nn.Module]:
        return list(self.blocks)

    def pool_tokens(self, tokens: Tensor, mask: Tensor | None, values: Tensor) -> Tensor:
        if self.pool == "cls":
            return tokens[:, :1]
        patch_mask = None if mask is None else mask[:, 1:]
        return super().pool_tokens(tokens[:, 1:], patch_mask, values)

    @classmethod
    def from_image(cls, vit: ViTEncoder, num_frames: int = 8, tubelet_size: int = 1, attention: Attention = "divided",
                   inflation: str = "central", **overrides) -> "VideoViTEncoder":
        """Inflate an image :class:`ViTEncoder` (weights copied; see the module docstring).

        ``overrides`` set other constructor arguments (``output``, ``proj_dim``, ``dropout``, ...); the
        projection is copied when the image encoder has one and ``proj_dim`` is not overridden.
        """
        if inflation not in INFLATIONS:
            raise ValueError(f"inflation must be one of {INFLATIONS}, got {inflation!r}")
        if vit.cls_token is None or isinstance(vit.fc_norm, nn.LayerNorm):
            raise ValueError("VideoViTEncoder.from_image needs a ViT with a [CLS] token and its final norm on every "
                             "token (class_token=True, norm_after_pool=False)")
        if any(not isinstance(block.ls1, nn.Identity) for block in vit.blocks):
            raise ValueError("VideoViTEncoder.from_image does not support layer-scale ViTs")
        first = vit.blocks[0]
        settings = dict(image_size=vit.image_size, patch_size=vit.patch_size, in_chans=vit.in_chans,
                        num_frames=num_frames, tubelet_size=tubelet_size, attention=attention, dim=vit.width,
                        depth=len(vit.blocks), heads=first.attn.heads, eps=first.norm1.eps,
                        mlp_ratio=first.mlp.fc1.out_features / vit.width, pre_norm=isinstance(vit.norm_pre, nn.LayerNorm),
                        final_norm=isinstance(vit.norm, nn.LayerNorm), output=vit.output, pool=vit.pool,
                        proj_dim=vit.out_dim if isinstance(vit.proj, nn.Linear) else None,
                        proj_bias=getattr(vit.proj, "bias", None) is not None)
        activation = {"GELU": "gelu", "QuickGELU": "quick_gelu", "ReLU": "relu"}.get(type(first.mlp.act).__name__)
        if getattr(first.mlp.act, "approximate", "none") == "tanh":
            activation = "gelu_tanh"
        video = cls(**{**settings, "activation": activation or "gelu", **overrides})
        video.inflate_from(vit, inflation)
        return video

    @torch.no_grad()
    def inflate_from(self, vit: ViTEncoder, inflation: str = "central") -> None:
        """Copy ``vit``'s weights into this encoder (shapes must match; see :meth:`from_image`)."""
        kernel = vit.patch_embed.proj.weight                                    # (D, C, p, p)
        inflated = torch.zeros_like(self.patch_embed.proj.weight)               # (D, C, t, p, p)
        if inflation == "central":
            inflated[:, :, self.tubelet_size // 2] = kernel
        else:
            inflated[:] = (kernel / self.tubelet_size)[:, :, None]
        self.patch_embed.proj.weight.copy_(inflated)
        if vit.patch_embed.proj.bias is not None:
            self.patch_embed.proj.bias.copy_(vit.patch_embed.proj.bias)
        else:
            self.patch_embed.proj.bias.zero_()
        for name in ("cls_token", "pos_embed"):
            getattr(self, name).copy_(getattr(vit, name))
        self.time_embed.zero_()
        for name in ("norm_pre", "norm", "proj"):
            target = getattr(self, name)
            if not isinstance(target, nn.Identity):
                target.load_state_dict(getattr(vit, name).state_dict())
        for block, image_block in zip(self.blocks, vit.blocks):
            spatial = block.spatial if isinstance(block, DividedSpaceTimeBlock) else block
            spatial.load_state_dict(image_block.state_dict())
            if isinstance(block, DividedSpaceTimeBlock):  # TimeSformer: temporal attention starts as the spatial one
                block.temporal_attn.load_state_dict(image_block.attn.state_dict())
                block.temporal_norm.load_state_dict(image_block.norm1.state_dict())
                block.temporal_fc.weight.zero_()
                block.temporal_fc.bias.zero_()

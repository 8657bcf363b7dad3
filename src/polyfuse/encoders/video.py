"""Video encoders: any image encoder per frame + a temporal model, and the space-time ViTs.

:class:`FrameTemporalEncoder` runs a polyfuse image encoder on every real frame of a clip
``(B, T, C, H, W)`` and models time over the per-frame embeddings:

* ``temporal="transformer"`` -- ViViT's factorised encoder (Arnab et al., 2021, model 2): a
  [CLS] token + learned frame positions through a temporal transformer; pooled = [CLS].
* ``temporal="mean"`` -- CLIP4Clip's parameter-free mean pooling (Luo et al., 2022, "meanP").
* ``temporal="seq"`` -- CLIP4Clip's sequential transformer ("seqTransf"): frame positions, a
  temporal transformer, and the frame embeddings added back; pooled = masked mean. The blocks'
  output layers and the positions start at zero, so an untrained ``seq`` encoder gives (twice) the
  ``mean`` embedding, as CLIP4Clip starts from CLIP.

The space-time ViTs (TimeSformer divided attention, ViViT tubelets, inflation from an image ViT)
are :class:`~polyfuse.encoders.video_vit.VideoViTEncoder`.

Padding and absence: padding frames (``mask`` ``False``) never reach the frame encoder, are not
attended to, and come out as zeros with ``False`` in the token mask; an absent clip
(``present=False``) gives zeros, as for every encoder.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.batch import ModalityInput
from polyfuse.checkpointing import checkpointed
from polyfuse.encoders.base import Encoder, Output
from polyfuse.layers import TransformerBlock
from polyfuse.masking import zero_invalid
from polyfuse.encoders.video_vit import VideoViTEncoder, attendable_keys

__all__ = ["FrameTemporalEncoder", "VideoViTEncoder", "TEMPORAL_MODELS"]

TEMPORAL_MODELS = ("transformer", "mean", "seq")


class FrameTemporalEncoder(Encoder):
    """Clips ``(B, T, C, H, W)`` + frame mask ``(B, T)`` -> frame tokens ``(B, [1 +] T, D)`` + mask.

    Args:
        frame_encoder: a pooled image encoder (``output="pooled"``), e.g. a :class:`ViTEncoder` or
            CLIP's image tower; ``D`` is its ``out_dim``.
        temporal: ``"transformer"``, ``"mean"`` or ``"seq"`` (see the module docstring).
        depth, heads, mlp_ratio, dropout, eps: the temporal transformer (unused for ``"mean"``).
        max_frames: the longest clip (frame position embeddings).
        output, proj_dim, pool, freeze, grad_checkpointing: as for every encoder; ``freeze=1``
            freezes the frame encoder only.
    """

    def __init__(self, frame_encoder: Encoder, temporal: str = "transformer", depth: int = 1, heads: int = 4,
                 mlp_ratio: float = 2.0, dropout: float = 0.0, eps: float = 1e-6, max_frames: int = 32,
                 output: Output = "tokens", proj_dim: int | None = None, pool: str | None = None,
                 freeze: int | bool = False, grad_checkpointing: bool = False,
                 attention_backend: str | None = None) -> None:
        if temporal not in TEMPORAL_MODELS:
            raise ValueError(f"FrameTemporalEncoder temporal must be one of {TEMPORAL_MODELS}, got {temporal!r}")
        if getattr(frame_encoder, "output", None) != "pooled":
            raise ValueError("FrameTemporalEncoder needs a pooled frame encoder (output='pooled'), got "
                             f"{type(frame_encoder).__name__} with output={getattr(frame_encoder, 'output', None)!r}")
        width = int(frame_encoder.out_dim)
        super().__init__(width, output, proj_dim, has_cls=temporal == "transformer", pool=pool)
        self.frame_encoder, self.temporal, self.max_frames = frame_encoder, temporal, max_frames
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if temporal == "transformer" else None
        self.frame_pos = None if temporal == "mean" else nn.Parameter(torch.zeros(1, max_frames, width))
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, mlp_ratio, dropout, norm="pre", eps=eps, backend=attention_backend)
            for _ in range(0 if temporal == "mean" else depth))
        self.norm = nn.LayerNorm(width, eps=eps) if temporal == "transformer" else nn.Identity()
        self.grad_checkpointing = grad_checkpointing
        if temporal == "transformer":
            nn.init.normal_(self.frame_pos, std=0.02)
        for block in self.blocks if temporal == "seq" else ():  # start as mean pooling (CLIP4Clip)
            for layer in (block.attn.out_proj, block.mlp.fc2):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.freeze(freeze)

    def frame_features(self, values: Tensor, mask: Tensor) -> Tensor:
        """``(B, T, D)``: the frame encoder's embedding of every real frame, zeros for padding frames."""
        batch, frames = values.shape[:2]
        real = values[mask] if mask.any() else values[:1, 0]  # always run it: DDP expects every parameter used
        embedded = self.frame_encoder(ModalityInput(real)).tokens[:, 0]
        features = embedded.new_zeros(batch, frames, embedded.shape[-1])
        if mask.any():
            features[mask] = embedded
        else:
            features = features + 0.0 * embedded.sum()
        return features

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """``values: (B, T, C, H, W)``, ``mask: (B, T)`` -> ``(tokens, mask)``: ``(B, 1 + T, D)`` with
        ``temporal="transformer"`` ([CLS] first), else ``(B, T, D)``."""
        if values.dim() != 5 or values.shape[1] > self.max_frames:
            raise ValueError(f"FrameTemporalEncoder expects clips (B, T <= {self.max_frames}, C, H, W), "
                             f"got {tuple(values.shape)}")
        batch, frames = values.shape[:2]
        mask = torch.ones(batch, frames, dtype=torch.bool, device=values.device) if mask is None else mask
        features = self.frame_features(values, mask)
        if self.temporal == "mean":
            return features, mask
        x = features + zero_invalid(self.frame_pos[:, :frames].expand(batch, -1, -1), mask)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1)
            mask = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        keys = attendable_keys(mask)
        for block in self.blocks:
            x, _ = checkpointed(block, x, keys)
        x = self.norm(x) if self.temporal == "transformer" else x + features
        return zero_invalid(x, mask), mask

    def blocks_for_freezing(self) -> list[nn.Module]:
        return [self.frame_encoder, *self.blocks]

    def checkpoint_blocks(self) -> list[nn.Module]:
        return list(self.blocks)

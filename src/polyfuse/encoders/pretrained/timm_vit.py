"""timm ``VisionTransformer`` state dicts -> :class:`~polyfuse.encoders.ViTEncoder`."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from polyfuse.encoders.loading import (CheckpointError, StateDict, adapt_input_conv, count_indexed, build_loaded,
                                       read_state_dict, require, resize_pos_embed, split_fused)
from polyfuse.encoders.vision import ViTEncoder

KIND = "timm VisionTransformer"
IGNORED_PREFIXES = ("head.", "head_drop.")  # the ImageNet classifier


def convert_timm_vit(state: StateDict) -> tuple[StateDict, list[str]]:
    """Rename a timm ViT state dict to :class:`ViTEncoder` names; returns ``(state, ignored keys)``.

    ``blocks.N.attn.qkv`` is split into ``q_proj``/``k_proj``/``v_proj`` and ``attn.proj`` becomes
    ``attn.out_proj``; every other name is already shared. The classifier ``head`` is dropped.
    """
    converted: StateDict = {}
    ignored: list[str] = []
    for key, value in state.items():
        if key.startswith(IGNORED_PREFIXES):
            ignored.append(key)
            continue
        fused = re.fullmatch(r"(blocks\.\d+\.attn\.)qkv\.(weight|bias)", key)
        if fused:
            for name, part in zip(("q_proj", "k_proj", "v_proj"), split_fused(value)):
                converted[f"{fused.group(1)}{name}.{fused.group(2)}"] = part
            continue
        converted[re.sub(r"^(blocks\.\d+\.attn\.)proj\.", r"\1out_proj.", key)] = value
    return converted, ignored


def timm_vit_config(state: StateDict, source: str = "checkpoint") -> dict[str, Any]:
    """The :class:`ViTEncoder` arguments a timm ViT state dict implies (heads excepted: ``dim // 64``)."""
    patch = require(state, "patch_embed.proj.weight", source, KIND)
    pos = require(state, "pos_embed", source, KIND)
    dim, in_chans, patch_size = patch.shape[0], patch.shape[1], patch.shape[-1]
    prefix = 1 if "cls_token" in state else 0
    if any(k in state for k in ("reg_token", "dist_token")):
        raise CheckpointError(f"{source}: register/distillation tokens (reg_token, dist_token) are not supported")
    grid = math.isqrt(pos.shape[1] - prefix)
    if grid * grid != pos.shape[1] - prefix:
        raise CheckpointError(f"{source}: pos_embed has {pos.shape[1]} positions, not [CLS] + a square grid "
                              "(no_embed_class models are not supported)")
    depth = count_indexed(state, "blocks.")
    hidden = require(state, "blocks.0.mlp.fc1.weight", source, KIND).shape[0]
    fc_norm = "fc_norm.weight" in state
    return dict(image_size=grid * patch_size, patch_size=patch_size, in_chans=in_chans, dim=dim, depth=depth,
                heads=max(dim // 64, 1), mlp_ratio=hidden / dim, class_token=bool(prefix),
                pre_norm="norm_pre.weight" in state, final_norm=fc_norm or "norm.weight" in state,
                norm_after_pool=fc_norm, pool="mean" if fc_norm or not prefix else "cls",
                patch_bias="patch_embed.proj.bias" in state,
                layer_scale=1.0 if "blocks.0.ls1.gamma" in state else None, eps=1e-6)


def adapt_geometry(state: StateDict, encoder_kwargs: dict[str, Any], image_size: int | None, in_chans: int | None,
                   num_prefix_tokens: int) -> None:
    """In place: resample ``pos_embed`` to ``image_size`` and the patch conv to ``in_chans``."""
    if image_size is not None and image_size != encoder_kwargs["image_size"]:
        if image_size % encoder_kwargs["patch_size"]:
            raise CheckpointError(f"image_size {image_size} is not a multiple of the checkpoint's patch size "
                                  f"{encoder_kwargs['patch_size']}")
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], image_size // encoder_kwargs["patch_size"],
                                              num_prefix_tokens)
        encoder_kwargs["image_size"] = image_size
    if in_chans is not None and in_chans != encoder_kwargs["in_chans"]:
        state["patch_embed.proj.weight"] = adapt_input_conv(state["patch_embed.proj.weight"], in_chans)
        encoder_kwargs["in_chans"] = in_chans


def vit_from_timm(path: str | Path, heads: int | None = None, image_size: int | None = None,
                  in_chans: int | None = None, **options: Any) -> ViTEncoder:
    """Build a :class:`ViTEncoder` from a timm ViT state dict (``.safetensors`` / ``.pth`` / ``.bin``).

    Architecture is read from tensor shapes; ``heads`` (not stored in a state dict) defaults to
    ``dim // 64``, timm's convention for every standard ViT. ``image_size`` resamples the position
    table (bicubic, like timm); ``in_chans`` adapts the patch convolution (1 = summed RGB filters).
    ``options`` are further :class:`ViTEncoder` arguments (``output``, ``proj_dim``, ``freeze``, ...).
    """
    state = read_state_dict(path)
    kwargs = timm_vit_config(state, str(path))
    if heads is not None:
        kwargs["heads"] = heads
    state, ignored = convert_timm_vit(state)
    adapt_geometry(state, kwargs, image_size, in_chans, 1 if kwargs["class_token"] else 0)
    return build_loaded(ViTEncoder, kwargs, options, state, str(path), ignored)

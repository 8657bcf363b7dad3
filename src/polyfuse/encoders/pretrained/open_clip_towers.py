"""open_clip CLIP checkpoints -> :class:`ViTEncoder` (visual tower) and :class:`CLIPTextEncoder` (text tower).

A CLIP state dict holds both towers: ``visual.*`` for the image ViT, the text tower at top level
(``token_embedding``, ``positional_embedding``, ``transformer.resblocks.N``, ``ln_final``,
``text_projection``; ``text.*`` in ``CustomTextCLIP``). Head counts and the activation are not in
a state dict: pass ``config`` (an open_clip model config, e.g. ``model_configs/ViT-B-32.json``, as a
dict or a path) or ``heads``/``activation``; otherwise open_clip's defaults apply (vision: 64-wide
heads; text: ``width // 64`` heads; GELU — OpenAI weights need ``activation="quick_gelu"``).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import Any, Mapping

from polyfuse._optional import import_optional
from polyfuse.encoders.clip_text import CLIPTextEncoder
from polyfuse.encoders.loading import (CheckpointError, StateDict, count_indexed, build_loaded, read_state_dict,
                                       require, resolve_path, split_fused)
from polyfuse.encoders.pretrained.timm_vit import adapt_geometry
from polyfuse.encoders.vision import ViTEncoder

BLOCK_RENAMES = (("ln_1.", "norm1."), ("ln_2.", "norm2."), ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2."),
                 ("ls_1.", "ls1."), ("ls_2.", "ls2."), ("attn.out_proj.", "attn.out_proj."))


def open_clip_model_config(name: str) -> dict[str, Any]:
    """open_clip's own model config for ``name`` (``open_clip/model_configs/<name>.json``), not a copy."""
    open_clip = import_optional("open_clip", extra="clip", feature=f"open_clip model config {name!r}")
    config = open_clip.get_model_config(name)
    if config is None:
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5, cutoff=0.5)
        folder = Path(open_clip.__file__).parent / "model_configs"
        raise CheckpointError(f"unknown open_clip model {name!r}: no {folder / (name + '.json')}; "
                              f"close names: {close or open_clip.list_models()[:10]}")
    return dict(config)


def read_open_clip_config(config: Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """An open_clip model config (``{"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}``) as a dict.

    ``config`` is a dict, a JSON file (a model config, or an ``open_clip_config.json`` holding one
    under ``model_cfg``), or the name of one of open_clip's models (``"ViT-B-32"``).
    """
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config.get("model_cfg", config))
    text = str(config)
    if not text.endswith(".json") and "/" not in text and not resolve_path(text).exists():
        return open_clip_model_config(text)
    path = resolve_path(config)
    try:
        loaded = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read open_clip model config {path}: {error}") from error
    return dict(loaded.get("model_cfg", loaded))


def _convert_blocks(state: StateDict, prefix: str) -> StateDict:
    """``<prefix>transformer.resblocks.N.*`` -> ``blocks.N.*`` with ``in_proj`` split into q/k/v."""
    converted: StateDict = {}
    pattern = re.compile(rf"{re.escape(prefix)}transformer\.resblocks\.(\d+)\.(.+)")
    for key, value in state.items():
        match = pattern.fullmatch(key)
        if not match:
            continue
        block, rest = f"blocks.{match.group(1)}.", match.group(2)
        fused = re.fullmatch(r"attn\.in_proj_(weight|bias)", rest)
        if fused:
            for name, part in zip(("q_proj", "k_proj", "v_proj"), split_fused(value)):
                converted[f"{block}attn.{name}.{fused.group(1)}"] = part
            continue
        for old, new in BLOCK_RENAMES:
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        converted[block + rest] = value
    return converted


def convert_open_clip_visual(state: StateDict, final_ln_after_pool: bool = False,
                             project: bool = True) -> tuple[StateDict, list[str]]:
    """``visual.*`` of a CLIP state dict -> :class:`ViTEncoder` names; returns ``(state, ignored)``."""
    prefix = "visual." if any(k.startswith("visual.") for k in state) else ""
    visual = {k: v for k, v in state.items() if k.startswith(prefix)}
    converted = _convert_blocks(visual, prefix)
    renames = {"conv1.weight": "patch_embed.proj.weight", "ln_pre.weight": "norm_pre.weight",
               "ln_pre.bias": "norm_pre.bias"}
    post = "fc_norm" if final_ln_after_pool else "norm"
    renames.update({"ln_post.weight": f"{post}.weight", "ln_post.bias": f"{post}.bias"})
    ignored = [k for k in state if not k.startswith(prefix)] if prefix else []
    for key, value in visual.items():
        name = key[len(prefix):]
        if name.startswith("transformer.resblocks."):
            continue
        if name == "class_embedding":
            converted["cls_token"] = value.reshape(1, 1, -1)
        elif name == "positional_embedding":
            converted["pos_embed"] = value.unsqueeze(0)
        elif name == "proj":
            if project:
                converted["proj.weight"] = value.t().contiguous()
            else:
                ignored.append(key)
        else:
            converted[renames.get(name, name)] = value
    return converted, ignored


def vit_from_open_clip(path: str | Path, config: Mapping[str, Any] | str | Path | None = None,
                       heads: int | None = None, activation: str | None = None, project: bool = True,
                       image_size: int | None = None, in_chans: int | None = None, **options: Any) -> ViTEncoder:
    """Build the open_clip visual tower as a :class:`ViTEncoder` from a CLIP checkpoint.

    With ``project=True`` CLIP's ``visual.proj`` becomes the encoder's (bias-free) projection, so
    ``output="pooled"`` reproduces ``model.encode_image``. ``image_size``/``in_chans`` adapt the
    geometry as in :func:`~polyfuse.encoders.pretrained.vit_from_timm`.
    """
    cfg = read_open_clip_config(config)
    vision = dict(cfg.get("vision_cfg", {}))
    for unsupported in ("timm_model_name", "hf_model_name"):
        if vision.get(unsupported):
            raise CheckpointError(f"{path}: open_clip vision towers from {unsupported} are not ViTEncoder-shaped")
    if vision.get("attentional_pool"):
        raise CheckpointError(f"{path}: attentional pooling (CoCa) is not supported")
    state = read_state_dict(path)
    final_ln_after_pool = bool(vision.get("final_ln_after_pool", False))
    converted, ignored = convert_open_clip_visual(state, final_ln_after_pool, project)
    patch = require(converted, "patch_embed.proj.weight", str(path), "open_clip CLIP (visual tower)")
    dim, patch_size = patch.shape[0], patch.shape[-1]
    grid = math.isqrt(converted["pos_embed"].shape[1] - 1)
    hidden = require(converted, "blocks.0.mlp.fc1.weight", str(path), "open_clip CLIP (visual tower)").shape[0]
    pool = {"tok": "cls", "avg": "mean"}.get(vision.get("pool_type", "tok"))
    if pool is None:
        raise CheckpointError(f"{path}: vision pool_type {vision.get('pool_type')!r} is not supported")
    kwargs: dict[str, Any] = dict(
        image_size=grid * patch_size, patch_size=patch_size, in_chans=patch.shape[1], dim=dim,
        depth=count_indexed(converted, "blocks."),
        heads=heads or max(dim // int(vision.get("head_width", 64)), 1), mlp_ratio=hidden / dim,
        activation=activation or ("quick_gelu" if cfg.get("quick_gelu") else "gelu"), eps=1e-5,
        class_token=True, pre_norm="norm_pre.weight" in converted, patch_bias=False,
        norm_after_pool=final_ln_after_pool, pool=pool, proj_bias=False,
        layer_scale=1.0 if "blocks.0.ls1.gamma" in converted else None,
        proj_dim=converted["proj.weight"].shape[0] if "proj.weight" in converted else None)
    adapt_geometry(converted, kwargs, image_size, in_chans, 1)
    if "proj_dim" in options and "proj.weight" in converted and options["proj_dim"] != kwargs["proj_dim"]:
        raise CheckpointError(f"{path}: proj_dim={options['proj_dim']} but CLIP's projection is "
                              f"{kwargs['proj_dim']}-wide; pass project=False to add a new projection")
    return build_loaded(ViTEncoder, kwargs, options, converted, str(path), ignored)


def convert_open_clip_text(state: StateDict, project: bool = True) -> tuple[StateDict, list[str]]:
    """The text tower of a CLIP state dict -> :class:`CLIPTextEncoder` names; ``(state, ignored)``."""
    prefix = "text." if any(k.startswith("text.") for k in state) else ""
    converted = _convert_blocks(state, prefix)
    ignored: list[str] = []
    for key, value in state.items():
        if not key.startswith(prefix):  # CustomTextCLIP: visual.*, logit_scale beside text.*
            ignored.append(key)
            continue
        name = key[len(prefix):]
        if name.startswith("transformer.resblocks."):
            continue
        if name.startswith("visual."):
            ignored.append(key)
        elif name == "text_projection":
            if project:
                converted["proj.weight"] = value.t().contiguous()
            else:
                ignored.append(key)
        elif name.startswith("text_projection."):  # nn.Linear projection (proj_bias=True)
            if project:
                converted["proj." + name.split(".", 1)[1]] = value
            else:
                ignored.append(key)
        elif name in ("logit_scale", "logit_bias", "attn_mask"):
            ignored.append(key)
        else:
            converted[name] = value
    return converted, ignored


def clip_text_from_open_clip(path: str | Path, config: Mapping[str, Any] | str | Path | None = None,
                             heads: int | None = None, activation: str | None = None, project: bool = True,
                             **options: Any) -> CLIPTextEncoder:
    """Build the open_clip text tower as a :class:`CLIPTextEncoder` from a CLIP checkpoint.

    With ``project=True`` ``text_projection`` becomes the encoder's projection, so
    ``output="pooled"`` (the default) reproduces ``model.encode_text``.
    """
    cfg = read_open_clip_config(config)
    text = dict(cfg.get("text_cfg", {}))
    if text.get("hf_model_name"):
        raise CheckpointError(f"{path}: open_clip text towers from Hugging Face models load with encoder_from_hf")
    if text.get("embed_cls") or text.get("final_ln_after_pool"):
        raise CheckpointError(f"{path}: CoCa-style text towers (embed_cls / final_ln_after_pool) are not supported")
    state = read_state_dict(path)
    converted, ignored = convert_open_clip_text(state, project)
    kind = "open_clip CLIP (text tower)"
    tokens = require(converted, "token_embedding.weight", str(path), kind)
    dim = tokens.shape[1]
    hidden = require(converted, "blocks.0.mlp.fc1.weight", str(path), kind).shape[0]
    pool = {"argmax": "argmax", "last": "last"}.get(text.get("pool_type", "argmax"))
    if pool is None:
        raise CheckpointError(f"{path}: text pool_type {text.get('pool_type')!r} is not supported")
    kwargs: dict[str, Any] = dict(
        vocab_size=tokens.shape[0], context_length=converted["positional_embedding"].shape[0], dim=dim,
        depth=count_indexed(converted, "blocks."), heads=heads or int(text.get("heads", max(dim // 64, 1))),
        mlp_ratio=hidden / dim, activation=activation or ("quick_gelu" if cfg.get("quick_gelu") else "gelu"),
        eps=1e-5, causal=not text.get("no_causal_mask", False), pool=pool,
        proj_dim=converted["proj.weight"].shape[0] if "proj.weight" in converted else None,
        proj_bias="proj.bias" in converted, layer_scale=1.0 if "blocks.0.ls1.gamma" in converted else None)
    return build_loaded(CLIPTextEncoder, kwargs, options, converted, str(path), ignored)

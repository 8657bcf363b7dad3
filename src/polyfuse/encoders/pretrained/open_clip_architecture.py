"""open_clip model configs -> polyfuse tower arguments, and polyfuse towers -> open_clip state dicts.

The forward direction (a checkpoint into polyfuse names) is in :mod:`.open_clip_towers`; this module
adds what a whole-model wrapper (:class:`polyfuse.models.CLIP`) needs besides: building the towers
from a model config alone (``vision_cfg`` / ``text_cfg``, as open_clip's ``CLIP`` does) and the exact
inverse of the checkpoint conversion, so a polyfuse model exports back to ``open_clip.create_model``.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch

from polyfuse.encoders.clip_text import CLIPTextEncoder
from polyfuse.encoders.loading import CheckpointError, StateDict
from polyfuse.encoders.pretrained.open_clip_towers import BLOCK_RENAMES
from polyfuse.encoders.vision import ViTEncoder

log = logging.getLogger(__name__)

# open_clip options that change the computation and have no polyfuse counterpart
CUSTOM_BLOCK_KEYS = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")


def _refuse(cfg: Mapping[str, Any], keys: tuple[str, ...], tower: str, source: str) -> None:
    used = [k for k in keys if cfg.get(k)]
    if used:
        raise CheckpointError(f"{source}: the {tower} tower sets {used}, which polyfuse's CLIP does not implement")


def vision_tower_kwargs(config: Mapping[str, Any], source: str = "open_clip config") -> dict[str, Any]:
    """:class:`ViTEncoder` arguments (pooled and projected: ``encode_image``) from an open_clip model config."""
    vision = dict(config.get("vision_cfg") or {})
    if isinstance(vision.get("layers", 12), (list, tuple)):
        raise CheckpointError(f"{source}: the vision tower is a ModifiedResNet (layers={vision['layers']}); "
                              "only ViT vision towers load into polyfuse.models.CLIP")
    for key in ("timm_model_name", "hf_model_name"):
        if vision.get(key):
            raise CheckpointError(f"{source}: vision_cfg.{key}={vision[key]!r}: towers built by timm / Hugging Face "
                                  "are not ViTEncoder-shaped; only open_clip's own ViT towers are supported")
    _refuse(vision, ("attentional_pool", "act_kwargs", "norm_kwargs") + CUSTOM_BLOCK_KEYS, "vision", source)
    if vision.get("pos_embed_type", "learnable") != "learnable":
        raise CheckpointError(f"{source}: vision pos_embed_type {vision['pos_embed_type']!r} is not supported")
    if vision.get("patch_dropout"):
        log.warning("%s: patch_dropout=%s is not applied by polyfuse (it only acts in training)", source,
                    vision["patch_dropout"])
    pool = {"tok": "cls", "avg": "mean"}.get(vision.get("pool_type", "tok"))
    if pool is None:
        raise CheckpointError(f"{source}: vision pool_type {vision.get('pool_type')!r} is not supported (tok, avg)")
    image_size, patch_size = vision.get("image_size", 224), vision.get("patch_size", 16)
    for name, value in (("image_size", image_size), ("patch_size", patch_size)):
        if isinstance(value, (list, tuple)):
            if len(set(value)) != 1:
                raise CheckpointError(f"{source}: non-square vision {name} {value} is not supported")
            value = value[0]
        vision[name] = int(value)
    width = int(vision.get("width", 768))
    # in_chans: not an open_clip option (its towers are RGB); polyfuse writes it for other inputs (grey digits)
    return dict(image_size=vision["image_size"], patch_size=vision["patch_size"],
                in_chans=int(vision.get("in_chans", 3)), dim=width,
                depth=int(vision.get("layers", 12)), heads=width // int(vision.get("head_width", 64)),
                mlp_ratio=float(vision.get("mlp_ratio", 4.0)),
                activation="quick_gelu" if config.get("quick_gelu") else "gelu", eps=1e-5, class_token=True,
                pre_norm=not vision.get("no_ln_pre", False), patch_bias=False,
                norm_after_pool=bool(vision.get("final_ln_after_pool", False)), pool=pool, proj_bias=False,
                layer_scale=vision.get("ls_init_value"), proj_dim=int(config["embed_dim"]), output="pooled")


def text_tower_kwargs(config: Mapping[str, Any], source: str = "open_clip config") -> dict[str, Any]:
    """:class:`CLIPTextEncoder` arguments (pooled and projected: ``encode_text``) from an open_clip model config."""
    text = dict(config.get("text_cfg") or {})
    if text.get("hf_model_name"):
        raise CheckpointError(f"{source}: text_cfg.hf_model_name={text['hf_model_name']!r}: Hugging Face text "
                              "towers are not supported by polyfuse.models.CLIP (use encoder_from_hf)")
    _refuse(text, ("embed_cls", "final_ln_after_pool", "act_kwargs", "norm_kwargs") + CUSTOM_BLOCK_KEYS, "text", source)
    if text.get("no_causal_mask"):  # CLIPA: pads masked as keys, yet pooled at the last *position*
        raise CheckpointError(f"{source}: bidirectional text towers (text_cfg.no_causal_mask, CLIPA) are not "
                              "supported by polyfuse.models.CLIP")
    pool = text.get("pool_type", "argmax")
    if pool not in ("argmax", "last"):
        raise CheckpointError(f"{source}: text pool_type {pool!r} is not supported (argmax, last)")
    proj_type = text.get("proj_type", "linear")
    if proj_type not in ("linear", "none"):
        raise CheckpointError(f"{source}: text proj_type {proj_type!r} is not supported (linear, none)")
    return dict(vocab_size=int(text.get("vocab_size", 49408)), context_length=int(text.get("context_length", 77)),
                dim=int(text.get("width", 512)), depth=int(text.get("layers", 12)), heads=int(text.get("heads", 8)),
                mlp_ratio=float(text.get("mlp_ratio", 4.0)),
                activation="quick_gelu" if config.get("quick_gelu") else "gelu", eps=1e-5,
                causal=not text.get("no_causal_mask", False), pool=pool, output="pooled",
                proj_dim=int(config["embed_dim"]) if proj_type == "linear" else None,
                proj_bias=bool(text.get("proj_bias", False)), layer_scale=text.get("ls_init_value"))


def _export_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """``blocks.N.*`` (polyfuse) -> ``<prefix>transformer.resblocks.N.*`` with q/k/v fused into ``in_proj``."""
    exported: StateDict = {}
    for key, value in state.items():
        if not key.startswith("blocks."):
            continue
        _, index, rest = key.split(".", 2)
        block = f"{prefix}transformer.resblocks.{index}."
        if rest.startswith(("attn.k_proj.", "attn.v_proj.")):
            continue
        if rest.startswith("attn.q_proj."):
            kind = rest.rsplit(".", 1)[1]  # weight | bias
            parts = [state[f"blocks.{index}.attn.{name}.{kind}"] for name in ("q_proj", "k_proj", "v_proj")]
            exported[f"{block}attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
            continue
        for old, new in BLOCK_RENAMES:
            if rest.startswith(new):
                rest = old + rest[len(new):]
                break
        exported[block + rest] = value
    return exported


def export_open_clip_visual(encoder: ViTEncoder, prefix: str = "visual.") -> StateDict:
    """A :class:`ViTEncoder` (CLIP-shaped: [CLS], no patch bias, bias-free projection) -> open_clip ``visual.*``."""
    if encoder.cls_token is None or encoder.patch_embed.proj.bias is not None:
        raise CheckpointError("only CLIP-shaped ViTEncoders (class_token=True, patch_bias=False) export to open_clip")
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    exported = _export_blocks(state, prefix)
    renames = {"patch_embed.proj.weight": "conv1.weight", "norm_pre.weight": "ln_pre.weight",
               "norm_pre.bias": "ln_pre.bias", "norm.weight": "ln_post.weight", "norm.bias": "ln_post.bias",
               "fc_norm.weight": "ln_post.weight", "fc_norm.bias": "ln_post.bias"}
    for key, value in state.items():
        if key.startswith("blocks."):
            continue
        if key == "cls_token":
            exported[prefix + "class_embedding"] = value.reshape(-1)
        elif key == "pos_embed":
            exported[prefix + "positional_embedding"] = value.squeeze(0)
        elif key == "proj.weight":
            exported[prefix + "proj"] = value.t().contiguous()
        elif key in renames:
            exported[prefix + renames[key]] = value
        else:
            raise CheckpointError(f"ViTEncoder key {key!r} has no open_clip counterpart")
    return exported


def export_open_clip_text(encoder: CLIPTextEncoder, prefix: str = "") -> StateDict:
    """A :class:`CLIPTextEncoder` -> open_clip text-tower keys (top level for ``CLIP``, ``text.`` for
    ``CustomTextCLIP``)."""
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    exported = _export_blocks(state, prefix)
    linear_projection = "proj.bias" in state  # open_clip keeps a biased projection as an nn.Linear
    for key, value in state.items():
        if key.startswith("blocks."):
            continue
        if key == "proj.weight":
            name, value = ("text_projection.weight", value) if linear_projection else ("text_projection", value.t())
            exported[prefix + name] = value.contiguous()
        elif key == "proj.bias":
            exported[prefix + "text_projection.bias"] = value
        else:
            exported[prefix + key] = value
    return exported

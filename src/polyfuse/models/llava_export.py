""":class:`~polyfuse.models.MultimodalLM` -> Hugging Face ``LlavaForConditionalGeneration`` (same weights).

The way back of :mod:`polyfuse.models.llava_convert`, for a model that fits LLaVA's shape: one
``image`` modality, a CLIP-style vision tower, a linear or 2-layer MLP connector and a Hugging Face
causal LM (Llama, Qwen2, GPT-2, ... as LLaVA's ``text_config``).

* Vision: polyfuse's :class:`~polyfuse.encoders.ViTEncoder` in CLIP's layout ([CLS], pre-LayerNorm,
  no final norm, bias-free patch convolution, ``output="tokens"``, no projection) becomes a
  ``CLIPVisionModel`` with as many layers and ``vision_feature_layer=-1`` (its ``hidden_states[-1]``
  are the ViT's tokens; ``post_layernorm`` is left at its initial value: LLaVA never reads it);
  wrapped in :class:`DropPrefixTokens` it exports as ``vision_feature_select_strategy="default"``,
  bare as ``"full"``. A wrapped HF tower (:class:`HFVisionTowerEncoder`) is copied with its layers.
* Connector: :class:`MLPConnector` -> ``multi_modal_projector`` (``linear_1``, activation,
  ``linear_2``); :class:`LinearConnector` -> ``linear_1`` = the projection, ``linear`` activation,
  ``linear_2`` = identity (LLaVA's projector always has two layers).
* LM: LoRA adapters are merged first, into a copy (the model keeps its adapters).

The tokenizer (with the placeholders) is saved next to the weights; ``<image>`` keeps its id as
``image_token_id``. LLaVA's processor also needs an image processor, which polyfuse does not write:
pixels must be prepared as polyfuse's image pipeline prepares them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polyfuse.encoders.pretrained.hf_vision_tower import CLIP_LAYER_RENAMES, DropPrefixTokens, HFVisionTowerEncoder
from polyfuse.encoders.vision import ViTEncoder
from polyfuse.fusion.connectors import LinearConnector, MLPConnector
from polyfuse.models import lora as lora_lib
from polyfuse.models.multimodal_lm import MultimodalLM

__all__ = ["hf_llava_from_multimodal_lm", "save_hf_llava"]


def _activation(module: nn.Module, where: str) -> str:
    """The Hugging Face ``ACT2FN`` name of an activation module."""
    if type(module).__name__ == "QuickGELU":
        return "quick_gelu"
    if isinstance(module, nn.GELU):
        return "gelu" if module.approximate == "none" else "gelu_pytorch_tanh"
    for kind, name in ((nn.ReLU, "relu"), (nn.SiLU, "silu"), (nn.Identity, "linear")):
        if isinstance(module, kind):
            return name
    raise ValueError(f"{where}: activation {type(module).__name__} has no Hugging Face equivalent")


def _clip_from_vit(vit: ViTEncoder) -> nn.Module:
    """A ``CLIPVisionModel`` whose ``hidden_states[-1]`` are ``vit``'s tokens."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    problems = [text for bad, text in (
        (vit.cls_token is None, "no [CLS] token"), (not isinstance(vit.norm_pre, nn.LayerNorm), "no pre-LayerNorm"),
        (not isinstance(vit.norm, nn.Identity), "a final norm on the tokens"),
        (vit.patch_embed.proj.bias is not None, "a bias in the patch convolution"),
        (vit.output != "tokens" or not isinstance(vit.proj, nn.Identity), "pooled or projected output"),
        (not vit.blocks, "no blocks"))
        if bad]
    if problems:
        raise ValueError(f"the image ViTEncoder is not in CLIP's layout ({', '.join(problems)}); LLaVA's vision "
                         "tower is a CLIP ViT (build it with pre_norm=True, final_norm=False, patch_bias=False)")
    block = vit.blocks[0]
    config = CLIPVisionConfig(hidden_size=vit.width, intermediate_size=block.mlp.fc1.out_features,
                              num_hidden_layers=len(vit.blocks), num_attention_heads=block.attn.heads,
                              image_size=vit.image_size, patch_size=vit.patch_size, num_channels=vit.in_chans,
                              layer_norm_eps=vit.norm_pre.eps, hidden_act=_activation(block.mlp.act, "image ViT"))
    tower = CLIPVisionModel(config)
    state = {"embeddings.class_embedding": vit.cls_token.reshape(-1),
             "embeddings.position_embedding.weight": vit.pos_embed[0],
             "embeddings.patch_embedding.weight": vit.patch_embed.proj.weight,
             "pre_layrnorm.weight": vit.norm_pre.weight, "pre_layrnorm.bias": vit.norm_pre.bias}
    for key, value in vit.blocks.state_dict().items():
        index, rest = key.split(".", 1)
        match = next(((hf, ours) for hf, ours in CLIP_LAYER_RENAMES if rest.startswith(ours)), None)
        if match is None:
            raise ValueError(f"image ViT parameter blocks.{key} has no place in a CLIP vision tower")
        state[f"encoder.layers.{index}.{match[0]}{rest[len(match[1]):]}"] = value
    missing, unexpected = getattr(tower, "vision_model", tower).load_state_dict(state, strict=False)
    left = [k for k in missing if not k.startswith("post_layernorm.") and not k.endswith("position_ids")]
    if left or unexpected:
        raise ValueError(f"image ViT -> CLIP vision tower: missing {left}, unexpected {unexpected}")
    return tower


def _vision(encoder: nn.Module) -> tuple[nn.Module, Any, str]:
    """``(CLIP tower, vision_feature_layer, vision_feature_select_strategy)`` of the image encoder."""
    if isinstance(encoder, HFVisionTowerEncoder):
        layers = encoder.layers[0] if len(encoder.layers) == 1 else list(encoder.layers)
        return copy.deepcopy(encoder.tower), layers, encoder.select_strategy
    strategy = "full"
    if isinstance(encoder, DropPrefixTokens):
        if encoder.count != 1:
            raise ValueError(f"the image encoder drops {encoder.count} prefix tokens; LLaVA drops one ([CLS]) or none")
        encoder, strategy = encoder.encoder, "default"
    if not isinstance(encoder, ViTEncoder):
        raise ValueError(f"the image encoder is a {type(encoder).__name__}; LLaVA export needs a CLIP-style "
                         "ViTEncoder (or HFVisionTowerEncoder)")
    return _clip_from_vit(encoder), -1, strategy


def _projector(connector: nn.Module, hidden: int) -> tuple[dict[str, torch.Tensor], str, bool]:
    """``(linear_1 / linear_2 state, projector_hidden_act, bias)`` of LLaVA's projector."""
    if isinstance(connector, MLPConnector):
        mlp = connector.mlp["image"]
        if mlp.linear_1.out_features != hidden:
            raise ValueError(f"the MLP connector's hidden width {mlp.linear_1.out_features} != the LM's {hidden}; "
                             "LLaVA's projector is vision -> LM width -> LM width")
        act = _activation(mlp.act, "MLP connector")
        return mlp.state_dict(), act, mlp.linear_1.bias is not None
    if isinstance(connector, LinearConnector):
        proj = connector.proj["image"]
        bias = proj.bias is not None
        state = {"linear_1.weight": proj.weight, "linear_2.weight": torch.eye(hidden, dtype=proj.weight.dtype)}
        if bias:
            state |= {"linear_1.bias": proj.bias, "linear_2.bias": torch.zeros(hidden, dtype=proj.weight.dtype)}
        return state, "linear", bias
    raise ValueError(f"the connector is a {type(connector).__name__}; LLaVA export needs an MLPConnector or a "
                     "LinearConnector (resampler / Q-Former have no LLaVA equivalent)")


@torch.no_grad()
def hf_llava_from_multimodal_lm(model: MultimodalLM) -> nn.Module:
    """A ``LlavaForConditionalGeneration`` computing what ``model`` computes on images (module docstring)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    if list(model.modalities) != ["image"]:
        raise ValueError(f"LLaVA takes images only; this model has modalities {model.modalities} "
                         "(build it with modalities=[image] to export)")
    lm = model.lm
    if lora_lib.has_lora(lm):
        lm = lora_lib.merge_lora(copy.deepcopy(lm))
    tower, layer, strategy = _vision(model.encoders["image"])
    projector, act, bias = _projector(model.connector, model.hidden_size)
    text_config = copy.deepcopy(lm.config)
    text_config.tie_word_embeddings = False  # lm_head is written out: LLaVA ties by Llama's names only
    config = LlavaConfig(vision_config=tower.config, text_config=text_config,
                         image_token_id=model.placeholder_ids["image"], vision_feature_layer=layer,
                         vision_feature_select_strategy=strategy, projector_hidden_act=act,
                         multimodal_projector_bias=bias, tie_word_embeddings=False)
    llava = LlavaForConditionalGeneration(config).eval()
    llava.model.vision_tower.load_state_dict(tower.state_dict())
    llava.model.multi_modal_projector.load_state_dict(projector)
    llava.model.language_model.load_state_dict(lm.base_model.state_dict())
    llava.lm_head.load_state_dict(lm.get_output_embeddings().state_dict())
    return llava


def save_hf_llava(model: MultimodalLM, directory: str | Path) -> Path:
    """Write ``model`` as a LLaVA ``save_pretrained`` directory (weights, config, tokenizer)."""
    directory = Path(directory)
    hf_llava_from_multimodal_lm(model).save_pretrained(str(directory))
    model.tokenizer.save_pretrained(str(directory))
    return directory

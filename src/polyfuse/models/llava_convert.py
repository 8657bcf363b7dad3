"""Hugging Face ``LlavaForConditionalGeneration`` -> :class:`~polyfuse.models.MultimodalLM` (same weights).

The CLIP vision tower becomes polyfuse's ``ViTEncoder`` cut at LLaVA's ``vision_feature_layer`` (or is
wrapped as :class:`~polyfuse.encoders.pretrained.hf_vision_tower.HFVisionTowerEncoder`), with
``vision_feature_select_strategy`` applied; the projector becomes an
:class:`~polyfuse.fusion.connectors.MLPConnector` (``linear_1 -> act -> linear_2``), and the language
model + ``lm_head`` become one ``AutoModelForCausalLM`` of the text config.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from polyfuse.encoders.pretrained.hf_vision_tower import (DropPrefixTokens, HFVisionTowerEncoder,
                                                          vit_from_hf_clip_vision)
from polyfuse.fusion.connectors import MLPConnector
from polyfuse.models.multimodal_lm import MultimodalLM

ACTIVATIONS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu", "silu": "silu"}


def multimodal_lm_from_hf_llava(llava: nn.Module, tokenizer: Any, vision: str = "polyfuse",
                               **options: Any) -> MultimodalLM:
    """A :class:`MultimodalLM` computing what ``llava`` computes (logits equal up to float rounding).

    ``tokenizer`` must map ``<image>`` to ``llava.config.image_token_id`` (so prompts tokenise alike).
    ``vision="polyfuse"``: the CLIP tower becomes polyfuse's :class:`~polyfuse.encoders.ViTEncoder`
    (one ``vision_feature_layer``; a list of layers falls back to the wrapper); ``"hf"``: HF's tower is
    wrapped (:class:`HFVisionTowerEncoder`). ``options`` go to :class:`MultimodalLM` (``stage``, ``lora``, ...).
    """
    from transformers import AutoModelForCausalLM

    config = llava.config
    activation = ACTIVATIONS.get(config.projector_hidden_act)
    if activation is None:
        raise ValueError(f"LLaVA projector activation {config.projector_hidden_act!r} is not supported; "
                         f"supported: {sorted(ACTIVATIONS)}")
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    if image_id != config.image_token_id:
        raise ValueError(f"the tokenizer maps <image> to {image_id}, the LLaVA config to {config.image_token_id}")
    inner = llava.model
    if vision not in ("polyfuse", "hf"):
        raise ValueError(f"vision must be 'polyfuse' or 'hf', got {vision!r}")
    layer, strategy = config.vision_feature_layer, config.vision_feature_select_strategy
    tower = inner.vision_tower
    encoder: nn.Module
    if vision == "polyfuse" and isinstance(layer, int) and type(tower).__name__ == "CLIPVisionModel":
        encoder = vit_from_hf_clip_vision(tower, layer)
        encoder = DropPrefixTokens(encoder, 1) if strategy == "default" else encoder
    else:
        encoder = HFVisionTowerEncoder(tower, layer, strategy)
    hidden = config.text_config.hidden_size
    connector = MLPConnector({"image": encoder.out_dim}, hidden, bias=config.multimodal_projector_bias,
                             activation=activation)
    connector.mlp["image"].load_state_dict(inner.multi_modal_projector.state_dict())
    lm = AutoModelForCausalLM.from_config(config.text_config)
    lm.model.load_state_dict(inner.language_model.state_dict())
    lm.lm_head.load_state_dict(llava.lm_head.state_dict())
    return MultimodalLM(lm, {"image": encoder}, connector, tokenizer=tokenizer, **options)

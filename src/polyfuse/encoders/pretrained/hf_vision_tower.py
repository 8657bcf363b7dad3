"""Hugging Face vision towers (``CLIPVisionModel``) as polyfuse image encoders, LLaVA's way.

LLaVA (Liu et al., 2023) feeds the language model the patch features of the *penultimate* layer of
CLIP's vision tower (``vision_feature_layer=-2``) without the [CLS] token
(``vision_feature_select_strategy="default"``; ``"full"`` keeps it). A list of layers concatenates
their features along the width, as Hugging Face's ``LlavaModel.get_image_features`` does.

:func:`vit_from_hf_clip_vision` maps a CLIP tower onto polyfuse's own :class:`ViTEncoder` (one feature
layer); :class:`HFVisionTowerEncoder` wraps any tower as it is (also several feature layers).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded, ModalityInput
from polyfuse.encoders.base import Encoder
from polyfuse.encoders.vision import ViTEncoder

STRATEGIES = ("default", "full")


class HFVisionTowerEncoder(Encoder):
    """Wrap a Hugging Face vision model: ``pixel_values (B, C, H, W)`` -> tokens ``(B, L, D * #layers)``.

    Args:
        tower: a module called as ``tower(pixel_values, output_hidden_states=True)`` whose output has
            ``hidden_states`` (embeddings first, then one entry per layer) and whose config has
            ``hidden_size``.
        feature_layer: index into ``hidden_states`` (``-2``: penultimate layer), or a list of them.
        select_strategy: ``"default"`` drops the first ([CLS]) token, ``"full"`` keeps every token.
        output, proj_dim, freeze: see :class:`~polyfuse.encoders.base.Encoder`.

    Every image gives the same number of tokens (no padding mask); absent samples come out as zeros.
    """

    def __init__(self, tower: nn.Module, feature_layer: int | Sequence[int] = -2, select_strategy: str = "default",
                 output: str = "tokens", proj_dim: int | None = None, freeze: bool = False) -> None:
        if select_strategy not in STRATEGIES:
            raise ValueError(f"vision select_strategy must be one of {STRATEGIES}, got {select_strategy!r}")
        layers = [feature_layer] if isinstance(feature_layer, int) else [int(i) for i in feature_layer]
        width = int(tower.config.hidden_size) * len(layers)
        super().__init__(width, output=output, proj_dim=proj_dim, has_cls=select_strategy == "full",  # type: ignore[arg-type]
                         pool="cls" if select_strategy == "full" else "mean")
        self.tower, self.layers, self.select_strategy = tower, layers, select_strategy
        if freeze:
            self.freeze(True)

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        hidden = self.tower(values, output_hidden_states=True).hidden_states
        selected = [hidden[i] for i in self.layers]
        if self.select_strategy == "default":
            selected = [h[:, 1:] for h in selected]
        return torch.cat(selected, dim=-1), None


class DropPrefixTokens(nn.Module):
    """``encoder`` with its first ``count`` output tokens dropped (a ViT's [CLS]: LLaVA's
    ``vision_feature_select_strategy="default"``). ``out_dim``, mask and presence are kept."""

    def __init__(self, encoder: nn.Module, count: int = 1) -> None:
        super().__init__()
        self.encoder, self.count, self.out_dim = encoder, int(count), int(encoder.out_dim)

    def forward(self, inputs: ModalityInput | Tensor) -> Encoded:
        encoded = self.encoder(inputs)
        mask = None if encoded.mask is None else encoded.mask[:, self.count:]
        return Encoded(encoded.tokens[:, self.count:], mask, encoded.present)


CLIP_LAYER_RENAMES = (("self_attn.q_proj.", "attn.q_proj."), ("self_attn.k_proj.", "attn.k_proj."),
                      ("self_attn.v_proj.", "attn.v_proj."), ("self_attn.out_proj.", "attn.out_proj."),
                      ("layer_norm1.", "norm1."), ("layer_norm2.", "norm2."), ("mlp.fc1.", "mlp.fc1."),
                      ("mlp.fc2.", "mlp.fc2."))


def vit_from_hf_clip_vision(tower: nn.Module, feature_layer: int = -2) -> ViTEncoder:
    """A Hugging Face ``CLIPVisionModel`` (or its ``vision_model``) as polyfuse's own :class:`ViTEncoder`,
    cut at ``feature_layer``: its tokens are ``hidden_states[feature_layer]`` ([CLS] first).

    ``hidden_states[k]`` is the output of the first ``k`` blocks after CLIP's pre-LayerNorm, so the
    encoder keeps those ``k`` blocks and no final norm (CLIP's ``post_layernorm`` acts on the pooled
    token only). Wrap it in :class:`DropPrefixTokens` for LLaVA's ``"default"`` strategy.
    """
    from polyfuse.encoders.pretrained.hf import ACTIVATIONS

    config = tower.config
    layers = int(config.num_hidden_layers)
    depth = feature_layer if feature_layer >= 0 else layers + 1 + feature_layer
    if not 0 <= depth <= layers:
        raise ValueError(f"vision feature_layer {feature_layer} is outside the tower's {layers} layers")
    if config.hidden_act not in ACTIVATIONS:
        raise ValueError(f"CLIP vision activation {config.hidden_act!r} is not supported; supported: {sorted(ACTIVATIONS)}")
    state = getattr(tower, "vision_model", tower).state_dict()
    converted = {"cls_token": state["embeddings.class_embedding"].reshape(1, 1, -1),
                 "pos_embed": state["embeddings.position_embedding.weight"].unsqueeze(0),
                 "patch_embed.proj.weight": state["embeddings.patch_embedding.weight"],
                 "norm_pre.weight": state["pre_layrnorm.weight"], "norm_pre.bias": state["pre_layrnorm.bias"]}
    for key, value in state.items():
        parts = key.split(".")
        if key.startswith("encoder.layers.") and int(parts[2]) < depth:
            rest = ".".join(parts[3:])
            for old, new in CLIP_LAYER_RENAMES:
                if rest.startswith(old):
                    converted[f"blocks.{parts[2]}.{new}{rest[len(old):]}"] = value
                    break
    hidden = int(config.hidden_size)
    encoder = ViTEncoder(image_size=int(config.image_size), patch_size=int(config.patch_size),
                         in_chans=int(config.num_channels), dim=hidden, depth=depth,
                         heads=int(config.num_attention_heads), mlp_ratio=config.intermediate_size / hidden,
                         eps=float(config.layer_norm_eps), class_token=True, pre_norm=True, final_norm=False,
                         activation=ACTIVATIONS[config.hidden_act], patch_bias=False)
    encoder.load_state_dict(converted, strict=True)
    return encoder

"""The architecture of a ViLT model as one typed record, and its one conversion to and from HF's ``ViltConfig``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from polyfuse.encoders.loading import CheckpointError
from polyfuse.encoders.pretrained.hf import _activation

__all__ = ["ViLTConfig", "image_modalities"]

#: polyfuse activation name -> HF ``hidden_act`` where they differ (the inverse of ``_activation``)
HF_ACTIVATIONS = {"gelu_tanh": "gelu_new"}


def image_modalities(type_count: int) -> list[str]:
    """Fusion modality names of the image rows ``1..type_count-1`` of HF's modality-type table."""
    return ["image"] + [f"image_{index}" for index in range(2, type_count)]


@dataclass(frozen=True)
class ViLTConfig:
    """What a ViLT model is made of (as open_clip's ``CLIPVisionCfg``, HF's ``ViltConfig``); task heads,
    labels and the attention backend are chosen by the task class, not here.

    Attributes:
        vocab_size, max_text_length, type_vocab_size, pad_token_id: BERT's text embedding (HF
            ``vocab_size``, ``max_position_embeddings``, ``type_vocab_size``, ``pad_token_id``).
        modality_type_vocab_size: rows of the modality-type table: text, image, image_2, ...
        dim, depth, heads, mlp_hidden, activation, eps: the transformer (HF ``hidden_size``,
            ``num_hidden_layers``, ``num_attention_heads``, ``intermediate_size``, ``hidden_act``,
            ``layer_norm_eps``).
        dropout, attn_dropout: HF ``hidden_dropout_prob``, ``attention_probs_dropout_prob``.
        image_size, patch_size, in_chans, max_image_length: the patch embedding (``max_image_length``
            patches kept per image, ``-1``: all).
        num_images: images per sample of the NLVR2 task.
    """

    vocab_size: int = 30522
    max_text_length: int = 40
    type_vocab_size: int = 2
    modality_type_vocab_size: int = 2
    pad_token_id: int = 0
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_hidden: int = 3072
    activation: str = "gelu"
    dropout: float = 0.0
    attn_dropout: float = 0.0
    eps: float = 1e-12
    image_size: int = 384
    patch_size: int = 32
    in_chans: int = 3
    max_image_length: int = -1
    num_images: int = 2

    @property
    def image_modalities(self) -> list[str]:
        """The fusion modality of image 1, 2, ... (HF ``image_token_type_idx`` 1, 2, ...)."""
        return image_modalities(self.modality_type_vocab_size)

    def replace(self, **changes: Any) -> "ViLTConfig":
        """A copy with ``changes``; an unknown name is an error naming the valid ones."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"ViLTConfig has no field {unknown}; valid: {', '.join(f.name for f in fields(self))}")
        return ViLTConfig(**{**asdict(self), **changes})

    @classmethod
    def from_hf(cls, config: Mapping[str, Any], source: str = "ViltConfig") -> "ViLTConfig":
        """From a HF ``config.json`` dict (``model_type: vilt``); ``source`` names the file in errors."""
        if config.get("model_type") != "vilt":
            raise CheckpointError(f"{source}: model_type {config.get('model_type')!r} is not a ViLT checkpoint "
                                  "(expected 'vilt' in config.json)")
        if not config.get("qkv_bias", True):
            raise CheckpointError(f"{source}: ViLT without qkv bias is not supported")
        image_size, patch_size = config.get("image_size", 384), config.get("patch_size", 32)
        if not isinstance(image_size, int) or not isinstance(patch_size, int):
            raise CheckpointError(f"{source}: only square images and patches are supported")
        return cls(
            vocab_size=config["vocab_size"], max_text_length=config.get("max_position_embeddings", 40),
            type_vocab_size=config.get("type_vocab_size", 2),
            modality_type_vocab_size=config.get("modality_type_vocab_size", 2),
            pad_token_id=config.get("pad_token_id", 0) or 0, dim=config["hidden_size"],
            depth=config["num_hidden_layers"], heads=config["num_attention_heads"],
            mlp_hidden=config["intermediate_size"], activation=_activation(dict(config), "hidden_act", source),
            dropout=config.get("hidden_dropout_prob", 0.0),
            attn_dropout=config.get("attention_probs_dropout_prob", 0.0),
            eps=config.get("layer_norm_eps", 1e-12), image_size=image_size, patch_size=patch_size,
            in_chans=config.get("num_channels", 3), max_image_length=config.get("max_image_length", -1),
            num_images=config["num_images"] if config.get("num_images", -1) > 0 else 2)

    def to_hf(self) -> dict[str, Any]:
        """``ViltConfig`` keyword arguments of this architecture (``ViltConfig(**config.to_hf())``)."""
        return dict(
            vocab_size=self.vocab_size, max_position_embeddings=self.max_text_length,
            type_vocab_size=self.type_vocab_size, modality_type_vocab_size=self.modality_type_vocab_size,
            pad_token_id=self.pad_token_id, hidden_size=self.dim, num_hidden_layers=self.depth,
            num_attention_heads=self.heads, intermediate_size=self.mlp_hidden,
            hidden_act=HF_ACTIVATIONS.get(self.activation, self.activation), hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.attn_dropout, layer_norm_eps=self.eps, image_size=self.image_size,
            patch_size=self.patch_size, num_channels=self.in_chans, max_image_length=self.max_image_length,
            num_images=self.num_images)

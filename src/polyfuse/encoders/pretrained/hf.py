"""Hugging Face ``save_pretrained`` directories -> :class:`ViTEncoder` / :class:`TextTransformerEncoder`.

Supported ``model_type`` values: ``vit``; ``bert`` (and BERT-shaped models such as MiniLM),
``roberta`` / ``xlm-roberta`` / ``camembert``, ``distilbert``. The directory's ``config.json``
gives the architecture; weights come from ``model.safetensors`` (preferred) or
``pytorch_model.bin``. Task heads (``pooler``, ``classifier``, MLM heads) are reported and dropped.
Both the names ``save_pretrained`` writes and transformers 5's in-memory names are accepted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from polyfuse.encoders.base import Encoder
from polyfuse.encoders.loading import CheckpointError, StateDict, load_checked, read_state_dict, resolve_path
from polyfuse.encoders.pretrained.timm_vit import adapt_geometry
from polyfuse.encoders.text import TextTransformerEncoder
from polyfuse.encoders.vision import ViTEncoder

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
               "quick_gelu": "quick_gelu"}
IGNORED = re.compile(r"(pooler|classifier|cls|lm_head|vocab_transform|vocab_layer_norm|vocab_projector|qa_outputs)\."
                     r"|embeddings\.(position_ids|token_type_ids)$")

#: polyfuse's names inside a transformer block, in the order the per-architecture tables below list
#: the same weights under their Hugging Face names
BLOCK_PARTS = ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj", "norm1", "mlp.fc1", "mlp.fc2", "norm2")


def block_rules(layer: str, hf_parts: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Rules renaming ``<layer>.<i>.<hf part>.`` to ``blocks.<i>.<polyfuse part>.``; ``layer`` and the
    parts are regular expressions without capturing groups, the parts listed as :data:`BLOCK_PARTS`."""
    return tuple((rf"{layer}\.(\d+)\.{hf}\.", rf"blocks.\1.{ours}.") for hf, ours in zip(hf_parts, BLOCK_PARTS))


# (pattern, replacement) over names with the model prefix removed; first match wins.
VIT_RULES = (
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    *block_rules(r"(?:encoder\.layer|layers)", (
        r"attention\.(?:attention\.)?(?:query|q_proj)", r"attention\.(?:attention\.)?(?:key|k_proj)",
        r"attention\.(?:attention\.)?(?:value|v_proj)", r"attention\.(?:output\.dense|o_proj)",
        r"layernorm_before", r"(?:intermediate\.dense|mlp\.fc1)", r"(?:output\.dense|mlp\.fc2)", r"layernorm_after")),
    (r"layernorm\.", "norm."),
)
BERT_RULES = (
    (r"embeddings\.", "embeddings."),
    *block_rules(r"encoder\.layer", (
        r"attention\.self\.query", r"attention\.self\.key", r"attention\.self\.value", r"attention\.output\.dense",
        r"attention\.output\.LayerNorm", r"intermediate\.dense", r"output\.dense", r"output\.LayerNorm")),
)
DISTILBERT_RULES = (
    (r"embeddings\.", "embeddings."),
    *block_rules(r"transformer\.layer", (
        r"attention\.q_lin", r"attention\.k_lin", r"attention\.v_lin", r"attention\.out_lin", r"sa_layer_norm",
        r"ffn\.lin1", r"ffn\.lin2", r"output_layer_norm")),
)
MODEL_PREFIXES = ("vit.", "bert.", "roberta.", "distilbert.", "model.")


def read_hf_config(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a ``save_pretrained`` directory."""
    path = resolve_path(directory) / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise CheckpointError(f"{path} not found: not a Hugging Face save_pretrained directory") from error
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: malformed JSON ({error})") from error


def rename_hf(state: StateDict, rules: tuple[tuple[str, str], ...]) -> tuple[StateDict, list[str]]:
    """Apply ``rules`` after removing a task-model prefix (``bert.``, ``vit.``...); drop heads.

    Keys no rule matches are kept as they are, so they surface as *unexpected* in the strict load.
    """
    converted: StateDict = {}
    ignored: list[str] = []
    prefixed = [p for p in MODEL_PREFIXES if any(k.startswith(p) for k in state)]
    for key, value in state.items():
        name = key
        for prefix in prefixed:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if IGNORED.match(name):
            ignored.append(key)
            continue
        for pattern, replacement in rules:
            renamed, count = re.subn(f"^{pattern}", replacement, name)
            if count:
                name = renamed
                break
        converted[name] = value
    return converted, ignored


def _activation(config: dict[str, Any], key: str, source: str) -> str:
    name = config.get(key, "gelu")
    if name not in ACTIVATIONS:
        raise CheckpointError(f"{source}: activation {name!r} is not supported (supported: {sorted(ACTIVATIONS)})")
    return ACTIVATIONS[name]


def _vit(config: dict[str, Any], state: StateDict, source: str, options: dict[str, Any]) -> Encoder:
    converted, ignored = rename_hf(state, VIT_RULES)
    image_size, patch_size = config.get("image_size", 224), config.get("patch_size", 16)
    if not isinstance(image_size, int) or not isinstance(patch_size, int):
        raise CheckpointError(f"{source}: only square images and patches are supported")
    dim = config["hidden_size"]
    kwargs: dict[str, Any] = dict(
        image_size=image_size, patch_size=patch_size, in_chans=config.get("num_channels", 3), dim=dim,
        depth=config["num_hidden_layers"], heads=config["num_attention_heads"],
        mlp_ratio=config["intermediate_size"] / dim, eps=config.get("layer_norm_eps", 1e-12),
        activation=_activation(config, "hidden_act", source))
    if not config.get("qkv_bias", True):
        raise CheckpointError(f"{source}: ViT without qkv bias is not supported")
    adapt_geometry(converted, kwargs, options.pop("image_size", None), options.pop("in_chans", None), 1)
    kwargs.update(options)
    encoder = ViTEncoder(**kwargs)
    load_checked(encoder, converted, source, ignored)
    return encoder


def _text(config: dict[str, Any], state: StateDict, source: str, options: dict[str, Any]) -> Encoder:
    model_type = config["model_type"]
    if model_type == "distilbert":
        converted, ignored = rename_hf(state, DISTILBERT_RULES)
        dim, depth, heads, hidden = config["dim"], config["n_layers"], config["n_heads"], config["hidden_dim"]
        kwargs: dict[str, Any] = dict(type_vocab_size=0, activation=_activation(config, "activation", source))
    else:
        converted, ignored = rename_hf(state, BERT_RULES)
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError(f"{source}: position_embedding_type {config['position_embedding_type']!r} "
                                  "is not supported (absolute only)")
        dim, depth = config["hidden_size"], config["num_hidden_layers"]
        heads, hidden = config["num_attention_heads"], config["intermediate_size"]
        kwargs = dict(type_vocab_size=config.get("type_vocab_size", 2), eps=config.get("layer_norm_eps", 1e-12),
                      activation=_activation(config, "hidden_act", source))
        if model_type in ("roberta", "xlm-roberta", "camembert"):
            kwargs.update(position_ids="from_mask", position_offset=config.get("pad_token_id", 1) + 1)
    kwargs.update(vocab_size=config["vocab_size"], max_length=config.get("max_position_embeddings", 512), dim=dim,
                  depth=depth, heads=heads, mlp_ratio=hidden / dim, mlp_hidden=hidden,
                  pad_token_id=config.get("pad_token_id", 0) or 0)
    input_vocab = options.pop("input_vocab", None)
    kwargs.update(options)
    encoder = TextTransformerEncoder(**kwargs)
    load_checked(encoder, converted, source, ignored)
    if input_vocab is not None:
        from polyfuse.encoders.tokenize import TokenIdRemap

        encoder.input_map = TokenIdRemap.between(input_vocab, source)
    return encoder


BUILDERS: dict[str, Callable[[dict[str, Any], StateDict, str, dict[str, Any]], Encoder]] = {
    "vit": _vit, "bert": _text, "roberta": _text, "xlm-roberta": _text, "camembert": _text, "distilbert": _text}


def encoder_from_hf(directory: str | Path, **options: Any) -> Encoder:
    """Build and load the polyfuse encoder for a Hugging Face ``save_pretrained`` directory.

    Args:
        directory: local directory (or ``pkg://`` path) with ``config.json`` and weights.
        options: encoder arguments (``output``, ``pool``, ``proj_dim``, ``freeze``, ``dropout``,
            ``grad_checkpointing``...); ViT also takes ``image_size``/``in_chans`` (adapted
            geometry); text also takes ``input_vocab``: a ``tokenizer.json`` whose ids the encoder
            will receive, re-mapped word by word onto this model's vocabulary
            (:class:`~polyfuse.encoders.tokenize.TokenIdRemap`).

    Returns:
        :class:`ViTEncoder` for ``vit``, :class:`TextTransformerEncoder` for BERT-family models.
    """
    source = str(resolve_path(directory))
    config = read_hf_config(directory)
    model_type = config.get("model_type")
    if model_type not in BUILDERS:
        raise CheckpointError(f"{source}: model_type {model_type!r} is not supported "
                              f"(supported: {', '.join(sorted(BUILDERS))})")
    state = read_state_dict(directory)
    freeze = options.pop("freeze", False)
    encoder = BUILDERS[model_type](config, state, source, dict(options))
    encoder.freeze(freeze)
    return encoder

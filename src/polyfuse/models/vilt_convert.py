"""Hugging Face ViLT checkpoints <-> :class:`polyfuse.models.ViLT`: architecture and parameter names.

``config.json`` of a ``save_pretrained`` directory gives the architecture (:func:`vilt_options`);
parameter names are translated both ways by one table (:data:`NAME_RULES`), so loading
(:func:`hf_to_polyfuse`) and export (:func:`polyfuse_to_hf`) cannot drift apart. HF's single
``token_type_embeddings`` table (one row per modality type) becomes one modality-type vector per
fusion modality (``text``, ``image``, ``image_2``, ...) and back.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from polyfuse.encoders.loading import CheckpointError, StateDict
from polyfuse.encoders.pretrained.hf import _activation

#: HF ``architectures[0]`` -> polyfuse ViLT task
HF_TASKS = {"ViltModel": "model", "ViltForQuestionAnswering": "vqa", "ViltForImagesAndTextClassification": "nlvr2",
            "ViltForImageAndTextRetrieval": "retrieval", "ViltForMaskedLM": "model"}
#: polyfuse task -> the HF class whose ``state_dict`` :func:`polyfuse_to_hf` writes
TASK_CLASSES = {"model": "ViltModel", "vqa": "ViltForQuestionAnswering",
                "nlvr2": "ViltForImagesAndTextClassification", "retrieval": "ViltForImageAndTextRetrieval"}
TYPE_TABLE = "embeddings.token_type_embeddings.weight"
IGNORED = re.compile(r"(mlm_score\.|embeddings\.text_embeddings\.(position_ids|token_type_ids)$)")

# (HF name without the ``vilt.`` prefix, polyfuse name); ``{i}`` is a layer index, a trailing ``.``
# maps every parameter under that module.
NAME_RULES = (
    ("embeddings.text_embeddings.", "encoders.text.embeddings."),
    ("embeddings.cls_token", "encoders.image.cls_token"),
    ("embeddings.position_embeddings", "encoders.image.pos_embed"),
    ("embeddings.patch_embeddings.projection.", "encoders.image.patch_embed.proj."),
    ("encoder.layer.{i}.attention.attention.query.", "fusion.blocks.{i}.attn.q_proj."),
    ("encoder.layer.{i}.attention.attention.key.", "fusion.blocks.{i}.attn.k_proj."),
    ("encoder.layer.{i}.attention.attention.value.", "fusion.blocks.{i}.attn.v_proj."),
    ("encoder.layer.{i}.attention.output.dense.", "fusion.blocks.{i}.attn.out_proj."),
    ("encoder.layer.{i}.layernorm_before.", "fusion.blocks.{i}.norm1."),
    ("encoder.layer.{i}.layernorm_after.", "fusion.blocks.{i}.norm2."),
    ("encoder.layer.{i}.intermediate.dense.", "fusion.blocks.{i}.mlp.fc1."),
    ("encoder.layer.{i}.output.dense.", "fusion.blocks.{i}.mlp.fc2."),
    ("layernorm.", "fusion.norm."),
    ("pooler.dense.", "fusion.pooler.0."),
)
# task heads: HF names are top level (no ``vilt.`` prefix)
HEAD_RULES = {
    "vqa": (("classifier.0.", "head.classifier.1."), ("classifier.1.", "head.classifier.2."),
            ("classifier.3.", "head.classifier.4.")),
    "nlvr2": (("classifier.", "head.classifier."),),
    "retrieval": (("rank_output.", "head.classifier."),),
    "model": (),
}


def image_modalities(type_count: int) -> list[str]:
    """Fusion modality names of the image rows ``1..type_count-1`` of HF's modality-type table."""
    return ["image"] + [f"image_{index}" for index in range(2, type_count)]


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)"))


def _rename(name: str, rules: tuple[tuple[str, str], ...]) -> str | None:
    for source, target in rules:
        match = _pattern(source).match(name)
        if match:
            prefix = target.replace("{i}", match.group("i")) if "{i}" in source else target
            if not source.endswith(".") and name != match.group(0):
                continue  # a whole-name rule must match the whole name
            return prefix + name[match.end():]
    return None


def hf_to_polyfuse(state: StateDict, task: str, type_count: int) -> tuple[StateDict, list[str]]:
    """HF ViLT state dict (any task class) -> polyfuse names ``(converted, ignored keys)``.

    Keys of another task's head (and ``mlm_score``) are ignored and reported; keys no rule knows
    are kept as they are, so the strict load lists them as *unexpected*.
    """
    converted: StateDict = {}
    ignored: list[str] = []
    head_rules = HEAD_RULES[task]
    other_heads = tuple(src for name, rules in HEAD_RULES.items() if name != task for src, _ in rules)
    for key, value in state.items():
        name = key[len("vilt."):] if key.startswith("vilt.") else key
        if IGNORED.match(name):
            ignored.append(key)
            continue
        if name == TYPE_TABLE:
            converted.update(_split_types(value, type_count))
            continue
        renamed = _rename(name, NAME_RULES)
        if renamed is None and name == key:
            renamed = _rename(key, head_rules)
            if renamed is None and key.startswith(other_heads):
                ignored.append(key)
                continue
        converted[renamed or key] = value
    return converted, ignored


def _split_types(table: torch.Tensor, type_count: int) -> StateDict:
    names = ["text"] + image_modalities(type_count)
    if table.dim() != 2 or table.shape[0] != len(names):  # reported as a shape mismatch by the strict load
        return {f"fusion.project.type_embedding.{TYPE_TABLE}": table}
    return {f"fusion.project.type_embedding.{name}": table[row].clone() for row, name in enumerate(names)}


def polyfuse_to_hf(state: StateDict, task: str, type_count: int) -> StateDict:
    """polyfuse ViLT state dict -> the ``state_dict`` of HF's class for ``task`` (:data:`TASK_CLASSES`)."""
    prefix = "" if task == "model" else "vilt."
    inverse = tuple((target, source) for source, target in NAME_RULES)
    head_inverse = tuple((target, source) for source, target in HEAD_RULES[task])
    names = ["text"] + image_modalities(type_count)
    out: StateDict = {}
    for key, value in state.items():
        if key.startswith("fusion.project.type_embedding."):
            continue
        renamed = _rename(key, inverse)
        if renamed is not None:
            out[prefix + renamed] = value
            continue
        renamed = _rename(key, head_inverse)
        if renamed is None:
            raise KeyError(f"ViLT.to_hf: no Hugging Face name for parameter {key!r}")
        out[renamed] = value
    out[prefix + TYPE_TABLE] = torch.stack([state[f"fusion.project.type_embedding.{name}"] for name in names])
    return out


def vilt_options(config: dict[str, Any], source: str) -> dict[str, Any]:
    """:class:`~polyfuse.models.ViLT` arguments from a HF ``config.json`` (model_type ``vilt``)."""
    if config.get("model_type") != "vilt":
        raise CheckpointError(f"{source}: model_type {config.get('model_type')!r} is not a ViLT checkpoint "
                              "(expected 'vilt' in config.json)")
    if not config.get("qkv_bias", True):
        raise CheckpointError(f"{source}: ViLT without qkv bias is not supported")
    architectures = config.get("architectures") or ["ViltModel"]
    if architectures[0] not in HF_TASKS:
        raise CheckpointError(f"{source}: architecture {architectures[0]!r} is not supported "
                              f"(supported: {', '.join(HF_TASKS)})")
    image_size, patch_size = config.get("image_size", 384), config.get("patch_size", 32)
    if not isinstance(image_size, int) or not isinstance(patch_size, int):
        raise CheckpointError(f"{source}: only square images and patches are supported")
    id2label = config.get("id2label") or {}
    labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label))]
    return dict(
        task=HF_TASKS[architectures[0]], labels=labels or None, num_images=config["num_images"] if config.get("num_images", -1) > 0 else 2,
        vocab_size=config["vocab_size"], max_text_length=config.get("max_position_embeddings", 40),
        type_vocab_size=config.get("type_vocab_size", 2),
        modality_type_vocab_size=config.get("modality_type_vocab_size", 2), dim=config["hidden_size"],
        depth=config["num_hidden_layers"], heads=config["num_attention_heads"],
        mlp_hidden=config["intermediate_size"], activation=_activation(config, "hidden_act", source),
        dropout=config.get("hidden_dropout_prob", 0.0), attn_dropout=config.get("attention_probs_dropout_prob", 0.0),
        eps=config.get("layer_norm_eps", 1e-12), image_size=image_size, patch_size=patch_size,
        in_chans=config.get("num_channels", 3), max_image_length=config.get("max_image_length", -1),
        pad_token_id=config.get("pad_token_id", 0) or 0)

"""Hugging Face ViLT checkpoints <-> the polyfuse ViLT task classes: task, labels and parameter names.

``config.json`` of a ``save_pretrained`` directory gives the task (:func:`hf_task`) and class names
(:func:`hf_labels`); the architecture is :meth:`polyfuse.models.vilt_config.ViLTConfig.from_hf`.
Parameter names are translated both ways by one table (:data:`NAME_RULES`), so loading
(:func:`hf_to_polyfuse`) and export (:func:`polyfuse_to_hf`) cannot drift apart. HF's single
``token_type_embeddings`` table (one row per modality type) becomes one modality-type vector per
fusion modality (``text``, ``image``, ``image_2``, ...) and back.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

from polyfuse.encoders.loading import CheckpointError, StateDict
from polyfuse.models.vilt_config import image_modalities

#: HF ``architectures[0]`` -> polyfuse ViLT task
HF_TASKS = {"ViltModel": "model", "ViltForQuestionAnswering": "vqa", "ViltForImagesAndTextClassification": "nlvr2",
            "ViltForImageAndTextRetrieval": "retrieval", "ViltForMaskedLM": "model"}
log = logging.getLogger(__name__)
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


def hf_to_polyfuse(state: StateDict, task: str, type_count: int,
                   saved_task: str | None = None) -> tuple[StateDict, list[str]]:
    """HF ViLT state dict (any task class) -> polyfuse names ``(converted, ignored keys)``.

    Keys of another task's head (and ``mlm_score``) are ignored and reported: a checkpoint of
    ``saved_task`` (default: ``task``) loads its head only into the same task (HF names both the VQA
    and the NLVR2 head ``classifier``). Keys no rule knows are kept as they are, so the strict load
    lists them as *unexpected*.
    """
    converted: StateDict = {}
    ignored: list[str] = []
    head_rules = HEAD_RULES[task] if saved_task in (None, task) else ()
    other_heads = tuple(src for rules in HEAD_RULES.values() if rules is not head_rules for src, _ in rules)
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
    """One vector per fusion modality. A table with fewer image rows than the model (a pre-trained
    ``text, image`` table loaded for NLVR2's two images) gives each extra image the last image row, as
    ViLT's NLVR2 fine-tuning initialises it (``vilt/modules/vilt_module.py``)."""
    names = ["text"] + image_modalities(type_count)
    if table.dim() != 2 or not 2 <= table.shape[0] <= len(names):  # a shape mismatch for the strict load
        return {f"fusion.project.type_embedding.{TYPE_TABLE}": table}
    if table.shape[0] < len(names):
        log.info("ViLT: modality-type rows %s start as copies of image row %d", names[table.shape[0]:],
                 table.shape[0] - 1)
    last = table.shape[0] - 1
    return {f"fusion.project.type_embedding.{name}": table[min(row, last)].clone() for row, name in enumerate(names)}


def polyfuse_to_hf(state: StateDict, task: str, type_count: int) -> StateDict:
    """polyfuse ViLT state dict -> the ``state_dict`` of HF's class for ``task`` (``ViltModel`` for ``"model"``)."""
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


def hf_task(config: dict[str, Any], source: str) -> str:
    """The polyfuse task of a HF ``config.json`` (from ``architectures[0]``, :data:`HF_TASKS`)."""
    architectures = config.get("architectures") or ["ViltModel"]
    if architectures[0] not in HF_TASKS:
        raise CheckpointError(f"{source}: architecture {architectures[0]!r} is not supported "
                              f"(supported: {', '.join(HF_TASKS)})")
    return HF_TASKS[architectures[0]]


def hf_labels(config: dict[str, Any]) -> list[str] | None:
    """The class names of a HF ``config.json`` (``id2label`` in index order), ``None`` without any."""
    id2label = config.get("id2label") or {}
    labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label))]
    return labels or None


def labels_to_hf(labels: list[str] | None) -> dict[str, Any]:
    """``id2label`` / ``label2id`` entries of a HF config for ``labels`` (none for ``None``)."""
    if labels is None:
        return {}
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}

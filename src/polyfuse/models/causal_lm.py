"""Hugging Face causal language models for :class:`~polyfuse.models.MultimodalLM`: loading (local only),
their context length, and growing the vocabulary by the placeholder tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["context_length", "load_causal_lm", "resize_embeddings"]


def load_causal_lm(source: str | Path | Mapping[str, Any] | nn.Module, vocab_size: int | None = None) -> nn.Module:
    """A causal LM from a local ``save_pretrained`` directory, a config mapping (``model_type`` + fields,
    randomly initialised), or a ready module. Nothing is downloaded (``local_files_only``)."""
    if isinstance(source, nn.Module):
        return source
    from transformers import AutoConfig, AutoModelForCausalLM

    if isinstance(source, Mapping):
        options = dict(source)
        if "model_type" not in options:
            raise ValueError(f"an LM config needs `model_type` (llama, qwen2, gpt2, ...), got keys {sorted(options)}")
        if vocab_size is not None:
            options["vocab_size"] = vocab_size
        config = AutoConfig.for_model(options.pop("model_type"), **options)
        return AutoModelForCausalLM.from_config(config)
    path = Path(source).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"language model directory not found: {path} (a save_pretrained directory)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a save_pretrained language model directory")
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    except ValueError as error:  # transformers: "Unrecognized configuration class ... for AutoModelForCausalLM"
        kind = AutoConfig.from_pretrained(str(path), local_files_only=True).model_type
        raise ValueError(f"{path} holds a {kind!r} model, which is not a causal language model "
                         "(AutoModelForCausalLM cannot load it; decoder LMs such as llama, qwen2, gpt2 can)") from error


def context_length(lm: nn.Module) -> int | None:
    """The LM's maximum sequence length (``max_position_embeddings``, GPT-2's ``n_positions``), if it has one."""
    config = getattr(lm, "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def resize_embeddings(lm: nn.Module, size: int) -> None:
    """Grow the LM's vocabulary to ``size`` (the placeholders); new input and output rows are the mean
    of the old ones -- deterministic, so a saved adapter fits any model built the same way."""
    old = lm.get_input_embeddings().num_embeddings
    if old >= size:
        return
    lm.resize_token_embeddings(size, mean_resizing=False)
    with torch.no_grad():
        for layer in (lm.get_input_embeddings(), lm.get_output_embeddings()):
            if layer is not None and layer.weight.shape[0] >= size:
                layer.weight[old:] = layer.weight[:old].mean(0)
                bias = getattr(layer, "bias", None)
                if bias is not None:
                    bias[old:] = bias[:old].mean()

"""LoRA adapters on a Hugging Face causal LM through ``peft`` (optional extra ``polyfuse[llm]``).

Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang & Chen, "LoRA: Low-Rank Adaptation of Large Language
Models", ICLR 2022. Used by stage 2 of :class:`~polyfuse.models.MultimodalLM` (LLaVA's instruction
tuning with LoRA). ``peft`` is imported only here and only when LoRA is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn

__all__ = ["add_lora", "has_lora", "load_lora", "merge_lora", "require_peft", "save_lora"]

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "c_attn", "c_proj")


def require_peft() -> Any:
    """The ``peft`` module, or an ImportError that names the extra to install."""
    from polyfuse._optional import import_optional

    return import_optional("peft", extra="llm", feature="LoRA (MultimodalLM stage 2)")


def _targets(lm: nn.Module, wanted: Sequence[str]) -> list[str]:
    names = {name.rsplit(".", 1)[-1] for name, module in lm.named_modules() if isinstance(module, (nn.Linear,))}
    names |= {name.rsplit(".", 1)[-1] for name, module in lm.named_modules() if type(module).__name__ == "Conv1D"}
    found = [t for t in wanted if t in names]
    if not found:
        raise ValueError(f"LoRA target_modules {list(wanted)} match no linear layer of {type(lm).__name__}; "
                         f"its linear layers are named {sorted(names)}")
    return found


def add_lora(lm: nn.Module, r: int = 8, alpha: int = 16, dropout: float = 0.0,
             target_modules: Sequence[str] | None = None, **options: Any) -> nn.Module:
    """Wrap ``lm`` as a ``peft`` model with LoRA adapters; only the adapters are trainable.

    ``target_modules`` default: the attention projections that exist in ``lm`` (Llama / Qwen2:
    ``q_proj k_proj v_proj o_proj``; GPT-2: ``c_attn c_proj``).
    """
    peft = require_peft()
    targets = _targets(lm, target_modules or DEFAULT_TARGETS)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                             task_type="CAUSAL_LM", **options)
    return peft.get_peft_model(lm, config)


def has_lora(lm: nn.Module) -> bool:
    """Whether ``lm`` carries ``peft`` adapters."""
    return hasattr(lm, "peft_config")


def save_lora(lm: nn.Module, directory: str | Path) -> Path:
    """Write only the adapter weights and their config (``adapter_model.safetensors``, ``adapter_config.json``)."""
    if not has_lora(lm):
        raise ValueError("this language model has no LoRA adapters to save (stage 2 adds them)")
    directory = Path(directory)
    # the placeholder rows added to the embeddings are never read (replaced by modality tokens) and
    # are set deterministically (causal_lm.resize_embeddings): the adapters alone are enough
    lm.save_pretrained(str(directory), save_embedding_layers=False)  # type: ignore[operator]
    return directory


def load_lora(lm: nn.Module, directory: str | Path, trainable: bool = False) -> nn.Module:
    """``lm`` with the adapters saved in ``directory`` (by :func:`save_lora`)."""
    peft = require_peft()
    return peft.PeftModel.from_pretrained(lm, str(directory), is_trainable=trainable)


def merge_lora(lm: nn.Module) -> nn.Module:
    """The plain LM with the adapters folded into its weights (``W + B A * alpha / r``)."""
    if not has_lora(lm):
        raise ValueError("this language model has no LoRA adapters to merge")
    return lm.merge_and_unload()  # type: ignore[operator]


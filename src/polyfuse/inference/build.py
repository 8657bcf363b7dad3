"""Rebuilding a trained model from its saved config: the one place inference instantiates ``_target_``s.

Every model :func:`polyfuse.load` returns is built by :func:`build_model`, and the only other
instantiation (:func:`freeze_data_dependent_nodes`, for export) goes through :func:`instantiate_node`,
so a check of the ``_target_``s a saved config may name (an allow-list) goes here, once.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

__all__ = ["build_model", "instantiate_node", "freeze_data_dependent_nodes", "DATA_DEPENDENT_TARGETS"]

#: ``_target_``s whose result depends on the dataset files (read when the model is built); an export
#: replaces each such node with its value, so the exported config builds without the data
DATA_DEPENDENT_TARGETS = ("polyfuse.heads.AnswerVocabulary.from_answers",
                          "polyfuse.heads.vqa.AnswerVocabulary.from_answers")


def instantiate_node(node: Any) -> Any:
    """``hydra.utils.instantiate`` of one config node (the single instantiation entry point)."""
    import hydra

    return hydra.utils.instantiate(node)


def build_model(config: DictConfig) -> nn.Module:
    """The run's LightningModule (``config.model``), untrained, with the run's attention backend set
    (:func:`polyfuse.training.run_dir.configure_attention`, the rule training used).

    Args:
        config: a run's resolved ``config.yaml`` (or an export's): needs ``model`` and may set
            ``attention_backend`` (default ``auto``) and ``deterministic``.
    """
    from polyfuse.training.run_dir import configure_attention

    if "model" not in config:
        raise KeyError("the config has no `model` section (is it a polyfuse run's config.yaml?)")
    configure_attention(config)
    return instantiate_node(config.model)


def freeze_data_dependent_nodes(node: Any) -> Any:
    """A copy of ``node`` (a plain container) with every :data:`DATA_DEPENDENT_TARGETS` node replaced by
    its value (an answer vocabulary -> its list of answers), so building it reads no dataset file."""
    if isinstance(node, dict):
        if node.get("_target_") in DATA_DEPENDENT_TARGETS:
            value = instantiate_node(OmegaConf.create(node))
            return list(getattr(value, "answers", value))
        return {key: freeze_data_dependent_nodes(item) for key, item in node.items()}
    if isinstance(node, list):
        return [freeze_data_dependent_nodes(item) for item in node]
    return node

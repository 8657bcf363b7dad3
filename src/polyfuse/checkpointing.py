"""Activation (gradient) checkpointing: one switch per block, honoured by the loop that runs the block.

A block (a transformer block of an encoder, a fusion block, a decoder layer) whose attribute
``grad_checkpointing`` is ``True`` is run by its loop through :func:`checkpointed`, i.e. under
``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` while training: its activations are
recomputed in backward instead of stored. Outputs, gradients, parameter names and ``state_dict`` keys
are unchanged, and no ``forward`` is replaced. The layout follows Hugging Face transformers (a
``gradient_checkpointing`` flag checked in the layer loop, switched by ``gradient_checkpointing_enable``)
and timm (``set_grad_checkpointing``).

Switching it on is declarative, the same for encoders, fusions and decoders
(:func:`set_grad_checkpointing`): a module that runs blocks (an encoder, a caption decoder) names
them with ``checkpoint_blocks()``; any other module given is itself the block. The config keys are
an encoder's ``grad_checkpointing`` argument and the ``grad_checkpointing`` module patterns of
:class:`~polyfuse.training.performance.PerformanceKnobs`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpointed", "set_grad_checkpointing", "checkpointing_enabled"]


def checkpointed(block: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``block(*args, **kwargs)``, under non-reentrant activation checkpointing when the block's
    ``grad_checkpointing`` is set, it is training and gradients are enabled (the block loop's call)."""
    if getattr(block, "grad_checkpointing", False) and block.training and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False, **kwargs)
    return block(*args, **kwargs)


def _blocks(module: nn.Module) -> list[nn.Module]:
    return list(module.checkpoint_blocks()) if hasattr(module, "checkpoint_blocks") else [module]


def set_grad_checkpointing(module: nn.Module, enable: bool = True) -> list[nn.Module]:
    """Switch checkpointing of ``module``'s blocks (``module.checkpoint_blocks()``; else ``module``
    itself) on or off; returns those blocks. Raises ``ValueError`` naming the module when it runs no
    block that can be checkpointed."""
    blocks = _blocks(module)
    if not blocks and enable:
        raise ValueError(f"{type(module).__name__} runs no block that can be checkpointed "
                         "(its checkpoint_blocks() is empty)")
    for block in blocks:
        block.grad_checkpointing = enable
    return blocks


def checkpointing_enabled(module: nn.Module) -> bool:
    """Whether every block of ``module`` (see :func:`set_grad_checkpointing`) is checkpointed."""
    blocks = _blocks(module)
    return bool(blocks) and all(getattr(block, "grad_checkpointing", False) for block in blocks)

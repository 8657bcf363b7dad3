"""Memory and speed knobs applied to the model when training starts: activation checkpointing,
channels-last, ``torch.compile``. Measured effects: ``docs/scaling.md`` (``scripts/bench_knobs.py``)."""

from __future__ import annotations

import fnmatch
from typing import Any, Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from polyfuse.attention import auto as auto_attention
from polyfuse.checkpointing import set_grad_checkpointing

__all__ = ["PerformanceKnobs", "enable_grad_checkpointing", "select_modules"]


def select_modules(root: nn.Module, patterns: Sequence[str]) -> dict[str, nn.Module]:
    """Submodules of ``root`` whose dotted name matches a pattern segment by segment
    (``fusion.blocks.*`` = every direct child of ``fusion.blocks``, not their children).

    Raises ``KeyError`` naming the pattern when one matches nothing, listing the top-level names.
    """
    found: dict[str, nn.Module] = {}
    named = dict(root.named_modules())
    for pattern in patterns:
        parts = pattern.split(".")
        matches = {name: module for name, module in named.items() if name and len(name.split(".")) == len(parts)
                   and all(fnmatch.fnmatchcase(seg, pat) for seg, pat in zip(name.split("."), parts))}
        if not matches:
            top = sorted({name.split(".")[0] for name in named if name})
            raise KeyError(f"no submodule matches {pattern!r}; top-level modules: {top} "
                           "(patterns are dotted names, '*' matches one level)")
        found.update(matches)
    return found


def enable_grad_checkpointing(root: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Recompute the selected modules' activations in backward instead of storing them.

    Each selected module is switched with :func:`polyfuse.checkpointing.set_grad_checkpointing`: an
    encoder or a caption decoder checkpoints each of its blocks; any other module is a block
    (``fusion.blocks.*``) that the loop running it checkpoints. Parameters, ``state_dict`` keys
    and ``forward`` are unchanged. Returns the names of the modules selected.
    """
    selected = select_modules(root, patterns)
    for module in selected.values():
        set_grad_checkpointing(module)
    return list(selected)


class PerformanceKnobs(Callback):
    """Apply memory/speed options to ``pl_module.model`` (or the LightningModule) in ``setup``,
    before the strategy wraps it (DDP / FSDP) and moves it to the device; ``compile`` only after the
    first batch, which runs eagerly, so that ``backend="auto"`` attention has probed and chosen its
    kernels before ``torch.compile`` traces (:func:`polyfuse.attention.auto.prepare`).

    It also keeps the DDP ranks on the same attention kernels: after the first training batch and at
    each training epoch end every rank calls :func:`polyfuse.attention.auto.sync_choices`.

    Args:
        grad_checkpointing: module name patterns under the model to checkpoint, e.g.
            ``[encoders.image, encoders.text, fusion.blocks.*]``; ``[]`` = off. Trades compute
            (one extra forward of those modules) for activation memory (:mod:`polyfuse.checkpointing`).
        channels_last: store 4-D (conv) weights channels-last, so convolutions run in NHWC
            (faster with tensor cores under mixed precision; CNN encoders only).
        compile: ``torch.compile`` the model in place (``nn.Module.compile``: parameter names and
            checkpoints unchanged); ``True`` = the whole model, a list = those submodules.
        compile_options: keyword arguments for ``torch.compile`` (``mode``, ``dynamic``, ``backend``).
    """

    def __init__(self, grad_checkpointing: Sequence[str] = (), channels_last: bool = False,
                 compile: bool | Sequence[str] = False, compile_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.grad_checkpointing = list(grad_checkpointing)
        self.channels_last = channels_last
        self.compile = compile
        self.compile_options = dict(compile_options or {})
        self._applied = False
        self._prepared = False

    @staticmethod
    def target(pl_module: nn.Module) -> nn.Module:
        model = getattr(pl_module, "model", None)
        return model if isinstance(model, nn.Module) else pl_module

    def apply(self, module: nn.Module, compile: bool = True) -> nn.Module:
        """Apply every knob to ``module`` in place (also usable outside Lightning; ``compile=False``
        leaves ``torch.compile`` out, see :meth:`compile_module`); returns it."""
        if self.grad_checkpointing:
            enable_grad_checkpointing(module, self.grad_checkpointing)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return self.compile_module(module) if compile else module

    def compile_module(self, module: nn.Module) -> nn.Module:
        """``torch.compile`` the configured (sub)modules of ``module`` in place; returns it."""
        if self.compile:
            targets = {"": module} if self.compile is True else select_modules(module, list(self.compile))
            for submodule in targets.values():
                submodule.compile(**self.compile_options)
        return module

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self._applied:  # fit then test calls setup twice
            self.apply(self.target(pl_module), compile=False)
            self._applied = True

    def _after_first_batch(self, pl_module: LightningModule) -> None:
        """Agree on the attention choices the eager first batch made, then compile (once)."""
        if not self._prepared:
            self._prepared = True
            auto_attention.prepare()
            self.compile_module(self.target(pl_module))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any) -> None:
        self._after_first_batch(pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        auto_attention.sync_choices()  # buckets first met during the epoch (every rank reaches this)

    def _after_first_eval_batch(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # fit compiles after its first training batch
            self._after_first_batch(pl_module)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any) -> None:
        self._after_first_eval_batch(trainer, pl_module)

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any) -> None:
        self._after_first_eval_batch(trainer, pl_module)

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any) -> None:
        self._after_first_eval_batch(trainer, pl_module)

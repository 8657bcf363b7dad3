"""Numerical safety for long (mixed-precision) runs: skip steps whose loss or gradient is not finite.

A single NaN batch (a corrupt file, a zero-length clip, an fp16 overflow in a softmax) should cost
one step, not the run; a model that keeps producing NaN should stop with a message that says where,
instead of training on garbage for hours.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import Any, Iterator

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from polyfuse.training.nonfinite import locate_non_finite

__all__ = ["NonFiniteGuard", "NonFiniteTrainingError"]


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive optimizer steps had a non-finite loss or gradient."""


class NonFiniteGuard(Callback):
    """Skip and count optimizer steps with a non-finite loss or gradient; stop after ``max_consecutive``.

    Per optimizer step (all micro-batches of a gradient-accumulation window):

    * the loss of every micro-batch (``on_before_backward``) and every gradient after backward
      (``on_before_optimizer_step``, after fp16 unscaling, before clipping) are checked; the verdict
      is summed over ranks, so every rank skips the same steps and replicas never diverge;
    * a bad step is skipped: gradients are set to ``None`` (the optimizer leaves those parameters
      untouched, weight decay included) and batch-norm running statistics are restored to their
      values before the window, so the batch has no effect at all. The LR scheduler still steps;
    * it is counted (``train/skipped_steps``, also in checkpoints) and a warning names the module
      where the non-finite value first appeared: the forward pass is re-run on the offending batch
      under ``no_grad`` with forward hooks (a NaN already in the input batch is reported as such);
    * ``max_consecutive`` bad steps in a row raise :class:`NonFiniteTrainingError` on every rank.

    fp16 loss scaling (``precision=16-mixed`` on GPU): a gradient overflow with a finite loss is
    the ``GradScaler``'s business (it skips the step and halves the scale); it is counted as
    ``train/overflow_steps`` and not as a bad step, unless the scale has collapsed below
    ``min_loss_scale``.

    Args:
        max_consecutive: bad steps in a row that stop the run (>= 1).
        check_gradients: also check gradients (one max-abs reduction per step); with ``False`` only
            the loss is checked.
        locate: re-run the forward to name the first non-finite module (only on bad steps).
        min_loss_scale: under fp16 loss scaling, overflows below this scale count as bad steps.
    """

    def __init__(self, max_consecutive: int = 5, check_gradients: bool = True, locate: bool = True,
                 min_loss_scale: float = 1.0) -> None:
        super().__init__()
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive, self.check_gradients, self.locate = max_consecutive, check_gradients, locate
        self.min_loss_scale = min_loss_scale
        self.skipped_steps = 0
        self.overflow_steps = 0
        self.consecutive = 0
        self.last_report = ""
        self._window_batches: list[Any] = []
        self._bad_loss_batch: Any = None
        self._norm_stats: dict[str, Tensor] = {}

    # -- state that travels in checkpoints ------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps, "overflow_steps": self.overflow_steps,
                "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))
        self.overflow_steps = int(state_dict.get("overflow_steps", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))

    # -- hooks ----------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if not self._window_batches:  # first micro-batch of an optimizer step
            self._norm_stats = {name: buffer.detach().clone() for name, buffer in _norm_buffers(pl_module)}
            self._bad_loss_batch = None
        self._window_batches.append(batch)

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        if self._bad_loss_batch is None and not bool(torch.isfinite(loss.detach()).all()):
            self._bad_loss_batch = self._window_batches[-1] if self._window_batches else None

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        bad_loss = self._bad_loss_batch is not None
        bad_grad = self.check_gradients and _has_non_finite_grad(pl_module)
        flags = torch.tensor([float(bad_loss), float(bad_grad)], device=pl_module.device)
        bad_loss_anywhere, bad_grad_anywhere = (trainer.strategy.reduce(flags, reduce_op="sum") > 0).tolist()
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if bad_grad_anywhere and not bad_loss_anywhere and scaler is not None \
                and scaler.get_scale() >= self.min_loss_scale:
            self.overflow_steps += 1  # the GradScaler skips this step and lowers the scale
            self._log(pl_module)
            self._window_batches = []
            return
        if bad_loss_anywhere or bad_grad_anywhere:
            self._skip(trainer, pl_module, bad_loss, bad_grad, bad_loss_anywhere)
        else:
            self.consecutive = 0
        self._log(pl_module)
        self._window_batches = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._window_batches = []  # an incomplete accumulation window does not carry over

    # -- internals ------------------------------------------------------------------------------
    def _skip(self, trainer: Trainer, pl_module: LightningModule, bad_loss: bool, bad_grad: bool,
              bad_loss_anywhere: bool) -> None:
        what = "loss" if bad_loss_anywhere else "gradient"
        where = self._diagnose(trainer, pl_module, bad_loss, bad_grad)
        for parameter in pl_module.parameters():
            parameter.grad = None
        for name, buffer in _norm_buffers(pl_module):
            if name in self._norm_stats:
                buffer.copy_(self._norm_stats[name])
        self.skipped_steps += 1
        self.consecutive += 1
        self.last_report = (f"non-finite {what} at global step {trainer.global_step} (epoch {trainer.current_epoch}): "
                            f"{where}")
        if trainer.is_global_zero or bad_loss or bad_grad:  # every rank that saw it says where
            warnings.warn(f"NonFiniteGuard skipped the step ({self.consecutive} in a row, {self.skipped_steps} in "
                          f"total): {self.last_report}", RuntimeWarning, stacklevel=2)
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteTrainingError(
                f"{self.consecutive} consecutive optimizer steps had a non-finite loss or gradient "
                f"(limit: callbacks.nan_guard.max_consecutive={self.max_consecutive}); last one: {self.last_report}. "
                "Check the data at that point, lower the learning rate or clip gradients "
                "(trainer.gradient_clip_val), or use precision=bf16-mixed instead of 16-mixed.")

    def _diagnose(self, trainer: Trainer, pl_module: LightningModule, bad_loss: bool, bad_grad: bool) -> str:
        """Where this rank's non-finite value came from. Every rank re-runs its forward (the step is
        bad everywhere), so collectives inside the model (SyncBatchNorm) stay matched across ranks."""
        rank = f"rank {trainer.global_rank}: " if trainer.world_size > 1 else ""
        found = None
        if self.locate and "fsdp" not in type(trainer.strategy).__name__.lower() and self._window_batches:
            batch = self._bad_loss_batch if bad_loss else self._window_batches[-1]
            with getattr(trainer.precision_plugin, "forward_context", nullcontext)():
                found = locate_non_finite(pl_module, batch)
        if not bad_loss and not bad_grad:
            return f"{rank}finite here, non-finite on another rank"
        if found is not None:
            return rank + found
        grads = [name for name, p in pl_module.named_parameters()
                 if p.grad is not None and not bool(torch.isfinite(_local(p.grad)).all())]
        if grads:
            shown = ", ".join(grads[:5]) + (f" and {len(grads) - 5} more" if len(grads) > 5 else "")
            return f"{rank}forward pass finite; non-finite gradients in {shown}"
        return f"{rank}forward pass finite; the loss computation itself is non-finite"

    def _log(self, pl_module: LightningModule) -> None:
        pl_module.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False,
                      rank_zero_only=True)
        pl_module.log("train/overflow_steps", float(self.overflow_steps), on_step=True, on_epoch=False,
                      rank_zero_only=True)


def _norm_buffers(module: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """Running statistics of batch-norm-like layers (BatchNorm, SyncBatchNorm, tracked InstanceNorm)."""
    for name, child in module.named_modules():
        if isinstance(child, _NormBase) and child.track_running_stats:
            for buffer_name, buffer in child.named_buffers(recurse=False):
                if buffer is not None:
                    yield f"{name}.{buffer_name}", buffer


def _local(tensor: Tensor) -> Tensor:
    """This rank's shard of a ``DTensor`` (FSDP2 parameters and gradients), else the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _has_non_finite_grad(module: nn.Module) -> bool:
    """One max-abs norm per gradient (no overflow, NaN propagates), one host sync. Under FSDP2 each
    rank checks its own shard (the verdict is summed over ranks by the caller)."""
    grads = [g for g in (_local(p.grad.detach()) for p in module.parameters() if p.grad is not None) if g.numel()]
    if not grads:
        return False
    norms = torch._foreach_norm(grads, float("inf"))
    return not bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())

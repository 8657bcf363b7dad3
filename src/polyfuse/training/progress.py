"""Progress output that suits where stdout goes: a Rich bar in a terminal, plain lines in a log file.

Under SLURM (or ``| tee``, ``> log``) stdout is not a terminal: Rich's live bar then writes nothing
until the end and dumps wrapped fragments, and tqdm fills the file with carriage returns.
:class:`PlainProgress` prints one self-contained line every ``every_n_batches`` training batches and
at each epoch end instead::

    train epoch=1/25 batch=50/157 step=50/3925 loss=1.8734 samples_per_sec=612.4 eta=0:05:21
    train epoch=1/25 done step=157 train/loss_epoch=1.2034 val/acc=0.8120 val/loss=0.6420 time=0:00:31

:func:`progress_bar` picks one (``style: auto``: Rich when ``sys.stdout.isatty()``, else plain);
``configs/callbacks/default.yaml`` builds it as ``callbacks.progress_bar``.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar

from polyfuse.errors import ConfigValueError

__all__ = ["PlainProgress", "progress_bar"]

Style = Literal["auto", "rich", "plain", "tqdm"]


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0.0))))


def _number(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().float().cpu())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _batch_size(batch: Any) -> int:
    size = getattr(batch, "batch_size", None)
    if isinstance(size, int):
        return size
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor) and batch[0].dim():
        return int(batch[0].shape[0])
    return 1


class PlainProgress(ProgressBar):
    """Lightning progress bar for log files: a plain line every ``every_n_batches`` training batches
    (epoch, batch, global step, loss, samples/s since the previous line, ETA of the whole fit) and
    one at each epoch end (the epoch's logged metrics, e.g. ``val/acc``). Prints on global rank 0
    only (the base class disables it elsewhere); validation and test print nothing per batch.

    The ETA extrapolates the optimizer steps done since the fit (re)started to
    ``trainer.estimated_stepping_batches``, validation time included.
    """

    def __init__(self, every_n_batches: int = 50) -> None:
        super().__init__()
        if int(every_n_batches) < 1:
            raise ConfigValueError(f"callbacks.progress_bar.every_n_batches={every_n_batches}: expected an integer >= 1")
        self.every_n_batches = int(every_n_batches)
        self._enabled = True
        self._fit_start = 0.0
        self._fit_start_step = 0
        self._epoch_start = 0.0
        self._last_time = 0.0
        self._samples = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._enabled:
            print(*args, **kwargs, flush=True)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self._fit_start_step = trainer.global_step

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = self._last_time = time.perf_counter()
        self._samples = 0

    def _epoch(self, trainer: Trainer) -> str:
        total = trainer.max_epochs if trainer.max_epochs not in (None, -1) else "?"
        return f"{trainer.current_epoch + 1}/{total}"

    def _eta(self, trainer: Trainer) -> str:
        done = trainer.global_step - self._fit_start_step
        total = trainer.estimated_stepping_batches
        if done <= 0 or not isinstance(total, (int, float)) or total == float("inf"):
            return "?"
        seconds = (time.perf_counter() - self._fit_start) / done * max(total - trainer.global_step, 0)
        return _duration(seconds)

    def _loss(self, trainer: Trainer, outputs: Any) -> float | None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        value = _number(loss)
        if value is None:
            value = _number(trainer.progress_bar_metrics.get("train/loss_step"))
        return value

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._samples += _batch_size(batch)
        if not self._enabled or (batch_idx + 1) % self.every_n_batches:
            return
        now = time.perf_counter()
        rate = self._samples / (now - self._last_time) if now > self._last_time else float("nan")
        self._last_time, self._samples = now, 0
        batches = self.total_train_batches
        batches_text = f"{batch_idx + 1}/{int(batches)}" if batches != float("inf") else f"{batch_idx + 1}"
        steps = trainer.estimated_stepping_batches
        steps_text = f"{trainer.global_step}/{int(steps)}" if steps != float("inf") else str(trainer.global_step)
        loss = self._loss(trainer, outputs)
        self.print(f"train epoch={self._epoch(trainer)} batch={batches_text} step={steps_text} "
                   f"loss={'nan' if loss is None else f'{loss:.4f}'} samples_per_sec={rate:.1f} "
                   f"eta={self._eta(trainer)}")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._enabled:
            return
        metrics = {key: number for key, value in sorted(trainer.callback_metrics.items())
                   if (number := _number(value)) is not None and not key.endswith("_step")
                   and key.split("/")[0] in ("train", "val")}
        shown = " ".join(f"{key}={value:.4f}" for key, value in metrics.items())
        self.print(f"train epoch={self._epoch(trainer)} done step={trainer.global_step} {shown} "
                   f"time={_duration(time.perf_counter() - self._epoch_start)} eta={self._eta(trainer)}")


def progress_bar(style: Style = "auto", every_n_batches: int = 50, **rich_options: Any) -> ProgressBar:
    """The progress bar for ``style``: ``rich`` (Lightning's ``RichProgressBar``, options passed on),
    ``plain`` (:class:`PlainProgress`), ``tqdm`` (Lightning's ``TQDMProgressBar``), or ``auto``:
    rich when stdout is a terminal, plain otherwise (SLURM job logs, pipes)."""
    if style == "auto":
        style = "rich" if sys.stdout.isatty() else "plain"
    if style == "rich":
        return RichProgressBar(**rich_options)
    if style == "plain":
        return PlainProgress(every_n_batches=every_n_batches)
    if style == "tqdm":
        return TQDMProgressBar()
    raise ConfigValueError(f"callbacks.progress_bar.style={style!r}: expected auto, rich, plain or tqdm")

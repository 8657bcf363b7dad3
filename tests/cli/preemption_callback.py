"""Test helper (``tests.cli.preemption_callback.SignalAtStep``, imported by a `polyfuse-train`
subprocess with the repository on PYTHONPATH): be signalled like a
SLURM job about to be pre-empted or to hit its time limit."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from torch.optim import Optimizer


class SignalAtStep(Callback):
    """Send ``signal_name`` to this process once, in the middle of the optimizer step that makes
    ``global_step`` = ``step`` + 1 (gradients computed, weights not yet updated), as SLURM's
    ``--signal`` does to every task of a job. ``marker`` records that the signal was sent, so the
    requeued run (same command line, same callbacks) is not signalled again."""

    def __init__(self, step: int, marker: str, signal_name: str = "SIGUSR2") -> None:
        self.step, self.marker, self.signal_name = step, Path(marker), signal_name

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        if trainer.global_step >= self.step and not self.marker.exists():
            self.marker.write_text(f"{os.getpid()} step {trainer.global_step}\n")
            os.kill(os.getpid(), getattr(signal, self.signal_name))

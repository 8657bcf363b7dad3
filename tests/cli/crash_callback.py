"""Test helper (``tests.cli.crash_callback.CrashAtStep``, imported by a `polyfuse-train` subprocess with the repository on PYTHONPATH): die like a killed job."""

from __future__ import annotations

import os
import signal

from lightning.pytorch import Callback, LightningModule, Trainer


class CrashAtStep(Callback):
    """SIGKILL this process at the start of the first training batch with ``global_step >= step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)

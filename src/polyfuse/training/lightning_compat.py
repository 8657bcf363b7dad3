"""The Lightning internals polyfuse relies on where Lightning has no public API: each in one function.

Everything else goes through Lightning's public surface (``trainer.num_training_batches``,
``trainer.strategy.launcher``, cluster-environment plugins). What is left:

* :func:`is_last_train_batch` for a loader without a length: only the training fetcher knows, by
  fetching one batch ahead, that the batch just returned was the last one
  (``fit_loop.epoch_loop.batch_progress.is_last_batch``);
* :func:`reruns_command_line`: whether a strategy starts its other ranks by re-running the command line
  (Lightning's ``_SubprocessScriptLauncher``, which has no public name or flag).

``tests/training/test_lightning_compat.py`` checks both against the installed Lightning and fails with
a message naming its version, so an upgrade that moves them breaks there, not deep inside a run.
(The fetcher's look-ahead, which the loader's checkpointed position depends on, is in
:func:`polyfuse.data.loader.lightning_prefetch_lag`, checked by ``tests/data/test_multimodal_loader.py``.)
"""

from __future__ import annotations

import math

import lightning
from lightning.pytorch import Trainer

__all__ = ["is_last_train_batch", "reruns_command_line", "LIGHTNING_VERSION"]

LIGHTNING_VERSION = lightning.__version__


def is_last_train_batch(trainer: Trainer | None, batch_idx: int) -> bool:
    """Whether ``batch_idx`` is the last training batch of the epoch (``True`` without a trainer).

    A sized loader: ``batch_idx + 1 == trainer.num_training_batches`` (public; it counts
    ``limit_train_batches`` and continues across a mid-epoch resume). An unsized (streaming) one has
    ``num_training_batches == inf``: the fetcher's look-ahead flag, Lightning's only record of it.
    """
    if trainer is None:
        return True
    total = trainer.num_training_batches
    if math.isfinite(total):
        return batch_idx + 1 >= total
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


def reruns_command_line(trainer: Trainer) -> bool:
    """Whether ``trainer`` starts its other ranks by re-running this process's command line (``ddp``
    on one machine: Lightning's subprocess-script launcher), not by forking / spawning a function or
    by an external scheduler (``torchrun``, SLURM)."""
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    return isinstance(getattr(trainer.strategy, "launcher", None), _SubprocessScriptLauncher)

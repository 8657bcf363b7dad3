"""Hydra + Lightning multi-process launches: one run directory per run, files written by rank 0.

How a ``polyfuse-train trainer=ddp`` run gets *one* output directory, not one per rank: Lightning's
subprocess launcher starts ranks 1..N-1 by re-running the command line with
``hydra.run.dir=<rank 0's run dir> hydra.output_subdir=null`` appended, so every rank resolves
``paths.output_dir`` to the same directory and only rank 0 writes ``.hydra/``. What polyfuse adds:

* :func:`is_launch_rank_zero` for files written before the trainer exists (``config.yaml``);
  loggers, checkpoints and :class:`~polyfuse.training.RunArtifacts` already write on rank 0 only;
* :func:`check_multirun_launch`: a Hydra *multirun* (``-m``) cannot launch local DDP processes,
  because re-running the command line re-runs the whole sweep in every child rank. Under SLURM
  (``hydra/launcher=submitit_slurm``) or ``torchrun`` the processes are started externally and
  each sweep point is its own job, which is fine;
* :func:`submitit_requeue_plugins`: in a job started by submitit (``hydra/launcher=submitit_slurm``)
  submitit alone requeues on timeout / pre-emption, so the trainer gets a SLURM environment with
  Lightning's own auto-requeue turned off.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch import Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from polyfuse.training.lightning_compat import reruns_command_line

__all__ = ["is_launch_rank_zero", "check_multirun_launch", "submitit_requeue_plugins", "MultirunLaunchError"]


class MultirunLaunchError(RuntimeError):
    """A Hydra multirun asked Lightning to launch several local processes."""


def is_launch_rank_zero() -> bool:
    """``True`` in the process that writes run files: global rank 0 as read from the environment
    (``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``), valid before any process group exists."""
    return getattr(rank_zero_only, "rank", 0) == 0


def _hydra_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_multirun_launch(trainer: Trainer) -> None:
    """Raise :class:`MultirunLaunchError` when this is a Hydra multirun and ``trainer`` would start
    its other ranks by re-running the command line (instead of a scheduler having started them)."""
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if environment is None or environment.creates_processes_externally:
        return
    if not reruns_command_line(trainer) or not _hydra_multirun():
        return
    raise MultirunLaunchError(
        f"a Hydra multirun (-m) cannot start {trainer.world_size} local DDP processes: Lightning starts each rank "
        "by re-running the command line, which would re-run the whole sweep in every rank. Launch each sweep "
        "point as its own job (hydra/launcher=submitit_slurm, docs/scaling.md), or run the sweep points one by "
        "one without -m.")


def submitit_requeue_plugins(plugins: Sequence[Any] = ()) -> list[ClusterEnvironment]:
    """In a SLURM job started by submitit: ``[SLURMEnvironment(auto_requeue=False)]``, the plugin to add to
    the trainer's ``plugins`` (Lightning's public switch for its SLURM requeue); elsewhere, or when
    ``plugins`` already holds a cluster environment, ``[]``.

    Two requeue mechanisms exist and only one may act. Submitit's (the one polyfuse uses): sbatch gets
    ``--signal=USR2@<signal_delay_s>``, and on that signal submitit's handler on global rank 0 pickles
    the same job again (hydra-submitit-launcher's ``checkpoint()``: same overrides, same run directory),
    counts timeouts against ``max_num_timeout``, calls ``scontrol requeue`` and exits; the requeued job
    resumes with ``ckpt_path=last``. Lightning's (``SLURMEnvironment(auto_requeue=True)``, what it picks
    when it detects SLURM): on ``requeue_signal`` (SIGUSR1) it writes an ``hpc_ckpt_*.ckpt`` and calls
    ``scontrol requeue`` itself, with no limit on the count. With both on, a SIGUSR1 (or
    ``SUBMITIT_PREEMPT_SIGNAL=USR1``) would requeue twice or forever. The environment is the one Lightning
    would detect (torchelastic first, then SLURM), with only ``auto_requeue`` changed.
    """
    if not os.environ.get("SUBMITIT_EXECUTOR"):  # exported by submitit's job script (slurm / local)
        return []
    if any(isinstance(plugin, ClusterEnvironment) for plugin in plugins):
        return []
    if TorchElasticEnvironment.detect() or not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=False)]

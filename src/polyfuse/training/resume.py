"""Exact resume: a run killed mid-epoch and resumed ends exactly where an uninterrupted run ends.

Besides model/optimiser/scheduler (which Lightning restores), two things must survive a restart:

* **the training loader** -- sample order, per-sample augmentation and position are the
  :class:`~polyfuse.data.loader.MultimodalLoader`'s (torchdata ``StatefulDataLoader``) state, the
  same for every datamodule and for map-style and streaming data; every rank's is saved as the
  datamodule's state (:class:`~polyfuse.training.base_datamodule.PolyfuseDataModule`);
* **global RNG state** -- torch/numpy/python RNG states of every rank, kept by :class:`ExactResume`
  and put back just before the first resumed training batch (after the sanity check).

:class:`AtomicCheckpointIO` writes checkpoints to a temporary file in the same directory and renames it into place, so a kill
during a save never leaves a truncated ``last.ckpt``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from polyfuse.distributed import gather_from_ranks
from polyfuse.training.checkpoint_io import read_checkpoint

__all__ = ["ExactResume", "AtomicCheckpointIO", "rng_states", "set_rng_states"]


def rng_states() -> dict[str, Any]:
    """Global RNG states as tensors and plain Python values (loadable with ``weights_only=True``)."""
    numpy_state = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`rng_states`."""
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = states["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExactResume(Callback):
    """Make ``trainer.fit(ckpt_path=...)`` continue bit-for-bit (on CPU) where the checkpoint left off.

    The training loader's position is the datamodule's state
    (:class:`~polyfuse.training.base_datamodule.PolyfuseDataModule`, restored by Lightning before the
    loaders are built). This callback adds the global RNG states of every rank:

    * ``state_dict``: every rank's torch/numpy/python (and CUDA) RNG states at save time, gathered
      to rank 0, which writes the checkpoint; Lightning calls it on every rank, so the gather is safe;
    * ``on_train_start``: each rank restores its own, after the sanity check (which consumes RNG)
      and before the first resumed batch.

    Exactness also needs the same computation: ``deterministic=true`` pins the attention backend
    (``auto`` times backends and may pick another one after a restart).
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": gather_from_ranks(rng_states())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = list(state_dict.get("rng") or [])

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        ranks, self._pending = self._pending, None
        if ranks is None:
            return
        if len(ranks) != trainer.world_size:
            rank_zero_warn(f"ExactResume: the checkpoint holds the RNG states of {len(ranks)} processes, this run "
                           f"has {trainer.world_size}; random draws after the restart will differ")
            return
        set_rng_states(ranks[trainer.global_rank])

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:  # what was logged before the checkpoint is on disk with it
            logger.save()


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into ``.<name>.tmp-<pid>`` next to the target, fsync, then ``os.replace``.

    A reader sees either the previous complete file or the new complete file, never a partial one
    (Lightning's default writes through a temp file in ``/tmp`` and *moves* it, which is a copy when
    ``/tmp`` is another filesystem). Loading defaults to ``weights_only=True``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def load_checkpoint(self, path: str | Path, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        options = {} if map_location is None else {"map_location": map_location}
        return super().load_checkpoint(path, weights_only=True if weights_only is None else weights_only, **options)


# --- the step a resumed run continues from, and its loggers --------------------------------------------

def checkpoint_step(checkpoint: Path) -> int:
    """The ``global_step`` stored in a Lightning checkpoint (file or sharded directory)."""
    return int(read_checkpoint(checkpoint, weights=False).get("global_step", 0))


def csv_rows_before(path: Path, step: int) -> list[dict[str, float | int]]:
    """Rows of a Lightning ``CSVLogger`` file logged before ``step`` (a checkpoint's ``global_step``: its row
    ``step - 1`` was logged for the last batch the checkpoint includes), empty cells dropped."""
    import csv

    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            values: dict[str, float | int] = {}
            for key, value in row.items():
                if value not in ("", None):
                    values[key] = int(value) if value.lstrip("-").isdigit() else float(value)
            if int(values.get("step", 0)) < step:
                rows.append(values)
    return rows


def logger_resume_options(target: str, run_dir: Path, step: int) -> dict[str, Any]:
    """Extra constructor arguments that make a logger continue the run it logged before a restart.

    TensorBoard: ``purge_step`` drops events the killed process logged after the checkpoint.
    wandb: the previous run's ``id`` with ``resume="allow"`` (found under ``<run_dir>/wandb``).
    """
    name = target.rsplit(".", 1)[-1]
    if name == "TensorBoardLogger":
        return {"purge_step": step}
    if name == "WandbLogger":
        runs = sorted((run_dir / "wandb").glob("*run-*-*"))
        if runs:
            return {"id": runs[-1].name.rsplit("-", 1)[-1], "resume": "allow"}
    return {}


def continue_csv_log(logger: Any, rows: list[dict[str, float | int]]) -> None:
    """Put the rows a ``CSVLogger`` wrote before the restart back (its writer deletes the old file).
    Rank 0 only: the loggers of other DDP ranks write nothing (their ``experiment`` is a dummy)."""
    if not rows:
        return
    writer = logger.experiment
    if not isinstance(getattr(writer, "metrics", None), list):  # ranks > 0 get a dummy experiment (DDP, FSDP)
        return
    writer.metrics = [dict(row) for row in rows] + writer.metrics
    writer.save()

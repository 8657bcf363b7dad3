"""Exact resume: a run killed mid-epoch and resumed ends exactly where an uninterrupted run ends.

Four things must survive a restart besides model/optimiser/scheduler (which Lightning restores):

* **sample order** -- :class:`EpochPermutationSampler` draws epoch ``e``'s permutation from
  ``(seed, e)`` with its own generator, not from the global RNG at iterator creation;
* **augmentation randomness** -- :class:`SampleSeededDataset` seeds the (CPU) RNG per sample from
  ``(seed, epoch, index)`` and restores the global state afterwards, so the global RNG stream seen
  by the model (dropout, modality dropout) does not depend on when batches are fetched;
* **loader position** -- :class:`ResumableDataLoader` has ``state_dict``/``load_state_dict`` (the
  interface Lightning saves into ``loops.fit_loop.state_dict.combined_loader``) and skips the
  batches the checkpointed run already trained on;
* **global RNG state** -- :class:`ExactResume` stores torch/numpy/python RNG states in each
  checkpoint and puts them back just before the first resumed training batch (after the sanity
  check, which consumes RNG).

:class:`AtomicCheckpointIO` writes checkpoints to a temporary file in the same directory and
renames it into place, so a kill during a save never leaves a truncated ``last.ckpt``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from polyfuse.training.sharding import is_sharded_checkpoint, read_checkpoint

__all__ = ["EpochPermutationSampler", "SampleSeededDataset", "ResumableDataLoader", "ExactResume",
           "AtomicCheckpointIO", "make_resumable"]

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant for mixing integers into one 63-bit seed


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (seed, epoch, index, ...); different tuples give unrelated seeds."""
    state = 0
    for value in values:
        state = ((state ^ (int(value) & 0xFFFFFFFFFFFFFFFF)) * _MIX + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return state & 0x7FFFFFFFFFFFFFFF


class EpochPermutationSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` pairs: a permutation of ``range(size)`` drawn from ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` at each epoch start. :meth:`skip` drops the first ``count``
    positions of the given epoch's order (used when resuming mid-epoch); ``len()`` stays ``size``.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle = int(size), int(seed), shuffle
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, positions)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip(self, epoch: int, count: int) -> None:
        self._skip = (int(epoch), int(count))

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, 0
        if self._skip is not None and self._skip[0] == epoch:
            start = self._skip[1]
        self._skip = None
        for index in self.order(epoch)[start:]:
            yield epoch, index

    def __len__(self) -> int:
        return self.size


class SampleSeededDataset(Dataset):
    """``dataset[index]`` computed under a CPU RNG seeded from ``(seed, epoch, index)``.

    Indexed by the ``(epoch, index)`` pairs of :class:`EpochPermutationSampler`. Random transforms
    that draw from torch's global generator (torchvision's) become a function of the sample and the
    epoch; the global RNG state is restored after each sample.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(mix_seed(self.seed, epoch, index))
            return self.dataset[index]

    def __getattr__(self, name: str) -> Any:  # dataset attributes (num_classes, pad_id, ...) pass through
        if name in ("dataset", "seed"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ResumableDataLoader(DataLoader):
    """A shuffling training loader whose position can be saved and restored mid-epoch.

    ``state_dict()`` -> ``{"seed", "epoch", "batches"}``: the number of batches handed out in the
    current epoch. Lightning fetches a sized loader's batches on demand (no prefetch), so that is
    the number of batches trained on when a checkpoint is taken in ``on_train_batch_end``.
    ``load_state_dict`` makes the next iteration over that epoch skip those batches.

    Args:
        dataset: a map-style dataset. seed: drives order and per-sample augmentation.
        shuffle: random order per epoch (``False``: sequential). Other arguments as :class:`DataLoader`.
    """

    def __init__(self, dataset: Dataset, seed: int, batch_size: int = 1, shuffle: bool = True,
                 collate_fn: Callable | None = None, num_workers: int = 0, drop_last: bool = False,
                 pin_memory: bool = False, persistent_workers: bool = False, **kwargs: Any) -> None:
        kwargs.pop("sampler", None)
        kwargs.pop("generator", None)
        self.seed = int(seed)
        sampler = EpochPermutationSampler(len(dataset), self.seed, shuffle)  # type: ignore[arg-type]
        super().__init__(SampleSeededDataset(dataset, self.seed), batch_size=batch_size, sampler=sampler,
                         collate_fn=collate_fn, num_workers=num_workers, drop_last=drop_last,
                         pin_memory=pin_memory, persistent_workers=persistent_workers and num_workers > 0,
                         generator=torch.Generator().manual_seed(self.seed), **kwargs)
        self.batches_yielded = 0
        self._resume_batches = 0

    @property
    def epoch(self) -> int:
        return self.sampler.epoch  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self.batches_yielded = self._resume_batches if self._skip_applies() else 0
        self._resume_batches = 0
        for batch in super().__iter__():
            self.batches_yielded += 1
            yield batch

    def _skip_applies(self) -> bool:
        pending = self.sampler._skip  # type: ignore[attr-defined]
        return pending is not None and pending[0] == self.epoch

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "batches": self.batches_yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            rank_zero_warn(f"resuming a training loader saved with seed {state['seed']} under seed {self.seed}: "
                           "the sample order after the restart will differ from the original run")
        batches = int(state.get("batches", 0))
        self._resume_batches = batches
        self.sampler.skip(int(state.get("epoch", 0)), batches * int(self.batch_size or 1))  # type: ignore[attr-defined]


def make_resumable(loader: DataLoader, seed: int) -> DataLoader:
    """Rebuild ``loader`` as a :class:`ResumableDataLoader` (same dataset, batch size, collate, workers).

    Only a plain :class:`DataLoader` over a map-style dataset with the default samplers (random or
    sequential) is rebuilt, keeping shuffling as it was; a DataLoader subclass, a custom sampler or
    batch sampler, or an iterable dataset is returned unchanged, with a warning (mid-epoch resume
    then depends on that loader; RNG states are restored either way).
    """
    if isinstance(loader, ResumableDataLoader):
        return loader
    sampler = loader.sampler
    default_sampler = type(sampler) in (RandomSampler, SequentialSampler)
    default_batches = type(loader.batch_sampler) is BatchSampler
    if type(loader) is not DataLoader or not default_sampler or not default_batches \
            or not hasattr(loader.dataset, "__getitem__"):
        rank_zero_warn(f"exact resume: {type(loader).__name__} with {type(sampler).__name__} / "
                       f"{type(loader.batch_sampler).__name__} is left as it is; a run resumed mid-epoch may see "
                       "a different sample order")
        return loader
    extra = {"timeout": loader.timeout, "worker_init_fn": loader.worker_init_fn,
             "multiprocessing_context": loader.multiprocessing_context}
    if loader.num_workers > 0:
        extra["prefetch_factor"] = loader.prefetch_factor
    return ResumableDataLoader(loader.dataset, seed, batch_size=loader.batch_size or 1,
                               shuffle=isinstance(sampler, RandomSampler), collate_fn=loader.collate_fn,
                               num_workers=loader.num_workers, drop_last=loader.drop_last,
                               pin_memory=loader.pin_memory, persistent_workers=loader.persistent_workers, **extra)


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

    * ``setup``: wraps the datamodule's ``train_dataloader`` with :func:`make_resumable` (single
      process only: under DDP, Lightning's distributed sampler is kept and RNG states still resume).
    * ``state_dict``: global RNG states and the training loader's position at save time (a
      checkpoint taken in ``on_train_batch_end`` or ``on_train_epoch_end``).
    * ``on_train_start``: restores both, after the sanity check (which consumes RNG) and before
      the first resumed batch. (Lightning also saves the loader state, but does not load it when
      ``configure_optimizers`` built the loader early through ``trainer.estimated_stepping_batches``.)

    Exactness also needs the same computation: ``deterministic=true`` pins the attention backend
    (``auto`` times backends and may pick another one after a restart).

    Args:
        seed: seeds the loader's order and per-sample augmentation (use the run's ``seed``).
    """

    def __init__(self, seed: int | None = 0) -> None:
        super().__init__()
        self.seed = 0 if seed is None else int(seed)
        self._loader: ResumableDataLoader | None = None
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if stage != "fit":
            return
        if datamodule is None:
            rank_zero_warn("ExactResume needs trainer.fit(datamodule=...); training loaders are left as they are")
            return
        if trainer.world_size > 1:  # Lightning shards with a DistributedSampler, which this loader would replace
            rank_zero_warn("ExactResume: mid-epoch loader resume is single-process only; with "
                           f"{trainer.world_size} processes the training loader is left to Lightning")
            return
        original = getattr(datamodule, "_exact_resume_original", datamodule.train_dataloader)

        def train_dataloader() -> DataLoader:
            loader = make_resumable(original(), self.seed)
            if isinstance(loader, ResumableDataLoader):
                self._loader = loader
            return loader

        datamodule._exact_resume_original = original
        datamodule.train_dataloader = train_dataloader  # type: ignore[method-assign]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": rng_states(), "seed": self.seed}
        if self._loader is not None:
            state["loader"] = self._loader.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._pending is None:
            return
        if self._pending.get("loader") is not None and self._loader is not None:
            self._loader.load_state_dict(self._pending["loader"])
        if self._pending.get("rng") is not None:
            set_rng_states(self._pending["rng"])
        self._pending = None

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


# --- where a resumed run continues, and its loggers --------------------------------------------

def resolve_checkpoint(ckpt_path: str | Path | None, output_dir: str | Path) -> Path | None:
    """``None`` -> ``None``; ``"last"`` -> ``<output_dir>/checkpoints/last.ckpt`` if it exists (else
    ``None``: a fresh start, so a requeued job can always pass ``ckpt_path=last``); a path -> that file."""
    if ckpt_path in (None, ""):
        return None
    if str(ckpt_path) == "last":
        last = Path(output_dir) / "checkpoints" / "last.ckpt"
        return last.resolve() if last.is_file() or is_sharded_checkpoint(last) else None
    path = Path(ckpt_path).expanduser().resolve()
    if not (path.is_file() or is_sharded_checkpoint(path)):  # a file, or a directory of FSDP shards
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file ({path})")
    return path


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint belongs to (``<run>/checkpoints/<file>`` with ``<run>/config.yaml``)."""
    run = checkpoint.parent.parent
    if checkpoint.parent.name == "checkpoints" and (run / "config.yaml").is_file():
        return run
    return None


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
    """Put the rows a ``CSVLogger`` wrote before the restart back (its writer deletes the old file)."""
    if not rows:
        return
    writer = logger.experiment
    if not isinstance(getattr(writer, "metrics", None), list):  # ranks > 0 get a dummy experiment (DDP, FSDP)
        return
    writer.metrics = [dict(row) for row in rows] + writer.metrics
    writer.save()

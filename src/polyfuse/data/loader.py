"""The one loader of every datamodule: torchdata's ``StatefulDataLoader`` + sample order + bad-sample accounting.

:class:`MultimodalLoader` is what ``train_dataloader()`` / ``val_dataloader()`` / ``test_dataloader()``
of every polyfuse datamodule return (AV-digits, folders, CSV, COCO, VQAv2, Hugging Face, WebDataset
shards). It gives each of them the same guarantees:

* **resumable mid-epoch** -- the loader position is torchdata's ``StatefulDataLoader`` state
  (per worker, with prefetching accounted for); :class:`~polyfuse.training.resume.ExactResume`
  saves it in every checkpoint and restores it before the first resumed batch;
* **one epoch counter** -- map-style data: the :class:`EpochSampler`'s epoch (Lightning calls
  ``set_epoch`` at every epoch start); streaming data: the loader's own ``epoch``, handed to the
  dataset's ``set_epoch`` before each pass. Either is saved in the loader state;
* **order and augmentation are functions of (seed, epoch, index)** -- :class:`EpochSampler` draws
  epoch ``e``'s permutation from ``(seed, e)``, :class:`SampleSeededDataset` seeds random
  transforms per sample, so a restart sees exactly the batches the uninterrupted run saw;
* **data parallel** -- the sampler is a ``DistributedSampler`` (Lightning keeps it): training
  shards are padded to equal length on every rank (ranks take the same number of steps),
  evaluation shards are unpadded (every sample scored exactly once);
* **bad samples counted** -- every batch goes through the split's
  :class:`~polyfuse.data.errors.BadSampleTracker` (bad samples stay in the batch as placeholder
  rows, ``batch.valid``, so every rank runs the same steps); the epoch's count is closed, summed
  over ranks and checked at its last batch (a sized loader: Lightning never asks past its length)
  or when the iteration ends.
"""

from __future__ import annotations

import copy
import os
import random
import warnings
from typing import Any, Callable, Iterator, Sized

import torch
from torch.utils.data import Dataset, DistributedSampler, IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from polyfuse.batch import Batch
from polyfuse.distributed import rank_and_world
from polyfuse.data.errors import BAD_SAMPLES_KEY, BadSampleTracker

__all__ = ["EpochSampler", "SampleSeededDataset", "SampleSeededStream", "MultimodalLoader", "SeedWorker", "mix_seed",
           "run_seed"]

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant for mixing integers into one 63-bit seed


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (seed, epoch, index, ...); different tuples give unrelated seeds."""
    state = 0
    for value in values:
        state = ((state ^ (int(value) & 0xFFFFFFFFFFFFFFFF)) * _MIX + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return state & 0x7FFFFFFFFFFFFFFF


def run_seed(seed: int | None = None) -> int:
    """``seed`` if given, else the run's seed: ``PL_GLOBAL_SEED`` (set by ``lightning.seed_everything``),
    else ``torch.initial_seed()``."""
    if seed is not None:
        return int(seed)
    if "PL_GLOBAL_SEED" in os.environ:
        return int(os.environ["PL_GLOBAL_SEED"])
    return int(torch.initial_seed()) & 0x7FFFFFFFFFFFFFFF


class SeedWorker:
    """A loader's default ``worker_init_fn``: seeds the worker's global RNGs (``random``, ``torch``,
    ``numpy``) from ``(torch.initial_seed(), rank)`` -- the DataLoader's per-worker seed, drawn from the
    loader's seeded generator plus the worker id -- so workers and ranks draw different, reproducible
    streams. polyfuse's pipelines do not read these RNGs (they seed per sample); a dataset of one's own
    that calls ``random`` or ``torch.rand`` does. It takes the place of Lightning's
    ``pl_worker_init_function``, which ``seed_everything(workers=True)`` adds to a loader without one
    and whose import costs every spawned worker all of Lightning (docs/data.md, "Worker start-up").
    """

    def __init__(self, rank: int) -> None:
        self.rank = int(rank)

    def __call__(self, worker_id: int) -> None:
        seed = mix_seed(torch.initial_seed(), self.rank)
        torch.manual_seed(seed)
        random.seed(mix_seed(seed, 1))  # one seed per library: `random` and numpy are both Mersenne
        try:                             # Twisters and would repeat each other's draws from one seed
            import numpy
        except ImportError:  # pragma: no cover - numpy comes with torch's usual installs
            return
        numpy_seed = mix_seed(seed, 2)
        numpy.random.seed([numpy_seed & 0xFFFFFFFF, numpy_seed >> 32])


class EpochSampler(DistributedSampler):
    """Yields ``(epoch, index)`` pairs: this rank's share of epoch ``epoch``'s order.

    The order is ``range(size)`` or, with ``shuffle``, a permutation drawn from ``(seed, epoch)``
    alone (not from the global RNG). With ``world_size > 1`` rank ``r`` takes positions
    ``r, r + W, ...``; ``pad=True`` (training) first repeats the head of the order so that every
    rank gets ``ceil(size / W)`` samples (as ``torch``'s ``DistributedSampler``), ``pad=False``
    (evaluation) gives every sample to exactly one rank (shares differ by at most one).

    A ``DistributedSampler`` subclass, so Lightning neither replaces it nor wraps it, and calls
    :meth:`set_epoch` at each epoch start.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 pad: bool = True) -> None:  # no super().__init__: it would need a process group
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.size, self.seed, self.shuffle = int(size), int(seed), shuffle
        self.rank, self.num_replicas, self.pad = int(rank), int(world_size), pad
        self.drop_last = False
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int) -> list[int]:
        """Every rank's positions of ``epoch``, before sharding."""
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(self.size, generator=generator).tolist()

    def indices(self, epoch: int) -> list[int]:
        """This rank's dataset indices of ``epoch``, in order."""
        order = self.order(epoch)
        if self.num_replicas > 1 and self.pad and self.size:
            total = -(-self.size // self.num_replicas) * self.num_replicas
            order = (order * (total // len(order) + 1))[:total]
        return order[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        return ((epoch, index) for index in self.indices(epoch))

    def __len__(self) -> int:
        if self.num_replicas == 1:
            return self.size
        if self.pad:
            return -(-self.size // self.num_replicas)
        return len(range(self.rank, self.size, self.num_replicas))


class SampleSeededDataset(Dataset):
    """``dataset[index]`` computed under a CPU RNG seeded from ``(seed, epoch, index)``.

    Indexed by the ``(epoch, index)`` pairs of :class:`EpochSampler`. Random transforms that draw
    from torch's global generator (torchvision's) become a function of the sample and the epoch,
    whichever worker or process computes it; in the main process (``num_workers=0``) the global RNG
    state is restored after each sample.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)  # a plain index: as in epoch 0
        if get_worker_info() is not None:  # a worker's global RNG feeds nothing else: no need to restore it
            torch.default_generator.manual_seed(mix_seed(self.seed, epoch, index))
            return self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(mix_seed(self.seed, epoch, index))
            return self.dataset[index]

    def __getattr__(self, name: str) -> Any:  # dataset attributes (num_classes, pad_id, ...) pass through
        if name in ("dataset", "seed"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


class SampleSeededStream(IterableDataset):
    """The streaming counterpart of :class:`SampleSeededDataset`: the ``k``-th item a worker draws
    from ``dataset`` in epoch ``e`` is read and decoded under a CPU RNG seeded from
    ``(seed, e, rank, worker, k)``, so augmentation does not depend on worker RNG streams or on how
    a restarted loader fast-forwards. ``set_epoch`` is passed on to ``dataset``.
    """

    def __init__(self, dataset: IterableDataset, seed: int, rank: int = 0) -> None:
        super().__init__()
        self.dataset, self.seed, self.rank = dataset, int(seed), int(rank)
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()  # seen by persistent workers

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        items = iter(self.dataset)
        position = 0
        while True:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(mix_seed(self.seed, int(self._epoch), self.rank, worker, position))
                try:
                    item = next(items)
                except StopIteration:
                    return
            position += 1
            yield item

    def __getattr__(self, name: str) -> Any:  # reader attributes (targets, bad_records, ...) pass through
        if name in ("dataset", "seed", "rank", "_epoch"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


class MultimodalLoader(StatefulDataLoader):
    """A ``StatefulDataLoader`` over a map-style or streaming dataset (see the module docstring).

    Args:
        dataset: map-style (``__getitem__`` + ``__len__``) or an ``IterableDataset`` (streaming
            shards, which split themselves across ranks and workers).
        batch_size, collate_fn, num_workers, drop_last, pin_memory, persistent_workers, prefetch_factor: as ``DataLoader``.
        shuffle: random order per epoch (map-style; streaming datasets shuffle themselves).
        seed: seeds order and per-sample augmentation (default: the run's seed, :func:`run_seed`).
        train: a training split (padded DDP shards) or an evaluation split (unpadded shards).
        rank, world_size: default: the running process group.
        tracker: counts bad samples (``batch.extras["bad_samples"]``) per epoch.
        current_epoch: returns the trainer's epoch (datamodules pass ``trainer.current_epoch``);
            each pass reads it first, so streaming datasets reshuffle in step with the trainer.
            Without it, map-style loaders follow ``set_epoch`` and streaming ones count passes.
        worker_init_fn: called in each worker at its start, as ``DataLoader``'s; default
            :class:`SeedWorker` (the worker's global RNGs seeded by worker and rank).
        multiprocessing_context: how workers start: ``spawn`` (default) starts fresh interpreters;
            ``fork`` forks this process, which can deadlock a worker at start-up when another thread
            (gloo, a previous loader's queue feeder) holds CPython's thread-state lock at that moment
            (seen under DDP on CPython 3.11); ``None``: the platform's default.
        epoch_length: returns the batches the trainer takes per epoch (``trainer.num_training_batches``,
            which ``limit_train_batches`` may cut short): a state saved after that many batches is an
            epoch end, and a restart continues with the next epoch.
    """

    def __init__(self, dataset: Dataset, batch_size: int = 1, shuffle: bool = False, seed: int | None = None,
                 collate_fn: Callable | None = None, num_workers: int = 0, drop_last: bool = False,
                 pin_memory: bool = False, persistent_workers: bool = False, prefetch_factor: int | None = None,
                 train: bool = False, rank: int | None = None, world_size: int | None = None,
                 tracker: BadSampleTracker | None = None, current_epoch: Callable[[], int | None] | None = None,
                 epoch_length: Callable[[], float | None] | None = None,
                 worker_init_fn: Callable[[int], None] | None = None,
                 multiprocessing_context: str | None = "spawn") -> None:
        group_rank, group_size = rank_and_world()
        rank = group_rank if rank is None else rank
        world_size = group_size if world_size is None else world_size
        self.seed = run_seed(seed)
        self.tracker = tracker
        self.current_epoch, self.epoch_length = current_epoch, epoch_length
        self.rank = rank
        self.streaming = isinstance(dataset, IterableDataset)
        options: dict[str, Any] = {}
        if num_workers > 0:
            options["persistent_workers"] = persistent_workers
            options["multiprocessing_context"] = multiprocessing_context
            options["worker_init_fn"] = SeedWorker(rank) if worker_init_fn is None else worker_init_fn
            if prefetch_factor is not None:
                options["prefetch_factor"] = prefetch_factor
        if self.streaming:
            sampler = None
            wrapped: Dataset = SampleSeededStream(dataset, self.seed, rank)  # type: ignore[arg-type]
        else:
            sampler = EpochSampler(len(dataset), self.seed, shuffle=shuffle, rank=rank,  # type: ignore[arg-type]
                                   world_size=world_size, pad=train)
            wrapped = SampleSeededDataset(dataset, self.seed)
        with warnings.catch_warnings():  # torchdata 0.11 calls torch's deprecated set_vital
            warnings.filterwarnings("ignore", message=".*set_vital.*")
            super().__init__(wrapped, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn,
                             num_workers=num_workers, drop_last=drop_last, pin_memory=pin_memory,
                             generator=torch.Generator().manual_seed(self.seed), **options)
        self._stream_epoch = 0  # streaming data without ``current_epoch``: passes started so far - 1
        self._passes = 0
        self._pending: dict[str, Any] | None = None  # a loaded state, applied if its epoch comes next
        self._lagged: list[dict[str, Any]] = []
        self._consumed, self._complete = 0, False  # this pass: batches the trainer has had; exhausted

    # ---- the epoch --------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The epoch being (or about to be) read."""
        return self.sampler.epoch if isinstance(self.sampler, EpochSampler) else self._stream_epoch

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.sampler, EpochSampler):
            self.sampler.set_epoch(epoch)
        else:
            self._stream_epoch = int(epoch)

    def _start_pass(self) -> None:
        if self._pending is not None:  # a restart: the saved epoch, whatever the trainer says yet
            self.set_epoch(int(self._pending["epoch"]))
            if self._pending["position"]:
                super().load_state_dict(self._pending["position"])
            self._pending = None
        else:
            epoch = self.current_epoch() if self.current_epoch is not None else None
            if epoch is not None:
                self.set_epoch(epoch)
            elif self.streaming and self._passes:
                self._stream_epoch += 1
        self._passes += 1
        if self.streaming:
            set_epoch = getattr(self.dataset, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(self._stream_epoch)

    # ---- iteration ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # A generator: the underlying iterator (and its workers' prefetching) starts at the first
        # ``next()``, after Lightning has set the epoch and ExactResume has loaded the position.
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        self._start_pass()
        lag = lightning_prefetch_lag(self)
        self._lagged, self._consumed, self._complete = [], 0, False
        complete = ended = False
        expected = None if lag else len(self)  # Lightning never asks a sized loader past its length
        try:
            iterator = super().__iter__()
            while True:
                if lag:  # the position before each fetch; the trainer is ``lag`` fetches behind
                    self._lagged = (self._lagged + [copy.deepcopy(super().state_dict())])[-lag:]
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                finally:
                    self._consumed = max(0, self._fetched() - lag)
                if isinstance(batch, Batch) and self.tracker is not None:
                    self.tracker.observe(batch)  # pops extras["bad_samples"]; placeholder rows stay
                    if self._fetched() == expected:  # every rank at its last batch: global counts now
                        ended = True
                        self.tracker.end_epoch(complete=True)
                yield batch
            complete = self._complete = True
            self._consumed = self._fetched()
        finally:  # an epoch cut short (sanity check, limit_*_batches) is summarised, not checked
            if self.tracker is not None and not ended:
                self.tracker.end_epoch(complete=complete)

    # ---- state -------------------------------------------------------------------------------
    def _fetched(self) -> int:
        iterator = self._iterator
        return int(getattr(iterator, "_num_yielded", 0)) if iterator is not None else 0

    def state_dict(self) -> dict[str, Any]:
        """Epoch, position (torchdata's state as of the last batch the trainer consumed), whether
        that was the epoch's end, rank and seed."""
        if self._pending is not None:  # loaded but not iterated yet: hand the same state on
            return dict(self._pending)
        if self._lagged:
            position = self._lagged[0]
        elif self._iterator is None:  # nothing read yet (asking torchdata would start workers early)
            position = {}
        else:
            position = super().state_dict()
        length = self.epoch_length() if self.epoch_length is not None else None
        epoch_end = self._complete or (length is not None and self._consumed >= length)
        return {"seed": self.seed, "epoch": self.epoch, "position": position, "epoch_end": bool(epoch_end),
                "rank": self.rank}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` at the next pass: mid-epoch where it stopped, or, for a state saved
        at an epoch's end, at the start of the next epoch. A state of another rank is ignored (Lightning
        restores rank 0's loader state on every rank; each rank's own comes from the datamodule)."""
        if "position" not in state or "epoch" not in state:
            raise KeyError(f"not a {type(self).__name__} state (keys {sorted(state)}); was the checkpoint "
                           "written by an older polyfuse version?")
        if int(state.get("rank", self.rank)) != self.rank:
            return
        if int(state.get("seed", self.seed)) != self.seed:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(f"resuming a loader saved with seed {state['seed']} under seed {self.seed}: the sample "
                           "order after the restart will differ from the original run")
        if state.get("epoch_end"):
            self._pending = {**state, "epoch": int(state["epoch"]) + 1, "position": {}, "epoch_end": False}
        else:
            self._pending = dict(state)


def lightning_prefetch_lag(loader: Sized | Any) -> int:
    """Batches Lightning's training fetcher pulls ahead of the batch being trained on.

    Lightning (2.x, ``loops/fetchers.py``: ``_PrefetchDataFetcher``) fetches one batch ahead when a
    loader has no length, to know which batch is the last, and none when it has one. A checkpoint
    taken after batch ``k`` must record the position after ``k`` batches, not ``k + lag``.
    ``tests/data/test_loader.py`` checks this against the installed Lightning, so an upgrade that
    changes it fails loudly.
    """
    try:
        len(loader)
    except TypeError:
        return 1
    return 0

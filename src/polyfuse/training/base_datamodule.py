"""What every polyfuse datamodule shares: one loader per split, built one way.

:class:`PolyfuseDataModule` turns a dataset and a collate function per split into a
:class:`~polyfuse.data.loader.MultimodalLoader` (torchdata ``StatefulDataLoader``). Subclasses say
only *what* a split is (:meth:`dataset`, :meth:`collate`); *how* it is loaded is here, so that the
embedded AV-digits datamodule and the one for real formats
(:class:`~polyfuse.training.multimodal_datamodule.MultimodalDataModule`) have the same guarantees:
mid-epoch resume, equal training shards and exactly-once evaluation under DDP, bad samples counted
per split (docs/data.md lists each with the test that checks it).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from lightning.pytorch import LightningDataModule
from torch.utils.data import Dataset

from polyfuse.data.errors import BadSamplePolicy, BadSampleTracker
from polyfuse.data.loader import MultimodalLoader
from polyfuse.distributed import gather_from_ranks, rank_and_world

__all__ = ["PolyfuseDataModule"]


class PolyfuseDataModule(LightningDataModule):
    """Base class: loader settings and the loaders of ``train_split``, ``val_split`` and ``test_splits``.

    Args:
        batch_size: per process, for the training split. eval_batch_size: for the others
            (default ``batch_size``).
        num_workers, pin_memory, persistent_workers, prefetch_factor: DataLoader settings.
        drop_last: drop the last incomplete training batch.
        seed: seeds sample order and per-sample augmentation (default: the run's ``seed``).
        bad_samples: :class:`~polyfuse.data.errors.BadSamplePolicy` fields (``strict``,
            ``max_bad_fraction``, ``min_samples``, ``log_first``).
    """

    train_split: str = "train"
    val_split: str | None = "val"
    test_splits: list[str]

    def __init__(self, batch_size: int = 64, eval_batch_size: int | None = None, num_workers: int = 0,
                 pin_memory: bool = False, persistent_workers: bool = True, prefetch_factor: int | None = None,
                 drop_last: bool = False, seed: int | None = None,
                 bad_samples: Mapping[str, Any] | BadSamplePolicy | None = None) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"data.{name} must be a positive integer, got {value!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"data.num_workers must be an integer >= 0, got {num_workers!r}")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.persistent_workers, self.prefetch_factor, self.drop_last = persistent_workers, prefetch_factor, drop_last
        self.seed = seed
        self.policy = bad_samples if isinstance(bad_samples, BadSamplePolicy) else BadSamplePolicy(**dict(bad_samples or {}))
        self.trackers: dict[str, BadSampleTracker] = {}
        self._train_loader: MultimodalLoader | None = None
        self._resume_state: dict[str, Any] | None = None  # this rank's training-loader state, from a checkpoint

    # ---- what a split is (subclasses) ---------------------------------------------------------
    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (built once)."""
        raise NotImplementedError

    def collate(self, split: str) -> Callable[[list[Any]], Any]:
        """The collate function of ``split``."""
        raise NotImplementedError

    # ---- how it is loaded ---------------------------------------------------------------------
    def tracker(self, split: str) -> BadSampleTracker:
        """The bad-sample counts of ``split`` (one per split for the datamodule's lifetime)."""
        if split not in self.trackers:
            self.trackers[split] = BadSampleTracker(split, self.policy)
        return self.trackers[split]

    def loader(self, split: str, batch_size: int | None = None, evaluation: bool = False) -> MultimodalLoader:
        """The loader of ``split``: shuffled and padded across ranks for the training split,
        in order and unpadded (every sample once) for the others and with ``evaluation=True``
        (``polyfuse-eval`` scoring any split)."""
        dataset = self.dataset(split)
        train = split == self.train_split and not evaluation
        size = batch_size or (self.batch_size if train else self.eval_batch_size)
        loader = MultimodalLoader(dataset, batch_size=size, shuffle=train, seed=self.seed,
                                  collate_fn=self.collate(split), num_workers=self.num_workers,
                                  drop_last=train and self.drop_last, pin_memory=self.pin_memory,
                                  persistent_workers=self.persistent_workers, prefetch_factor=self.prefetch_factor,
                                  train=train, tracker=self.tracker(split), current_epoch=self._trainer_epoch,
                                  epoch_length=self._trainer_epoch_length if train else None)
        if train:
            self._train_loader = loader
            if self._resume_state is not None:
                loader.load_state_dict(self._resume_state)
                self._resume_state = None
        return loader

    def _trainer_epoch(self) -> int | None:
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else int(trainer.current_epoch)

    def _trainer_epoch_length(self) -> float | None:
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else float(trainer.num_training_batches)

    # ---- exact resume: the training loader's position, per rank, in every checkpoint ------------
    def state_dict(self) -> dict[str, Any]:
        """Every rank's training-loader state (Lightning calls this on every rank when it saves;
        rank 0 writes the file)."""
        local = self._train_loader.state_dict() if self._train_loader is not None else None
        return {"train_loader": gather_from_ranks(local)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Hand this rank's saved training-loader state to the training loader (Lightning calls this
        while restoring a checkpoint, before the loaders are built)."""
        ranks = state_dict.get("train_loader") or []
        rank, world = rank_and_world()
        if len(ranks) != world:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(f"the checkpoint holds the loader positions of {len(ranks)} processes, this run has "
                           f"{world}: the training data starts its epoch afresh")
            return
        mine = ranks[rank]
        if mine is None:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(mine)
        else:
            self._resume_state = mine

    # ---- Lightning's loader hooks -------------------------------------------------------------
    def train_dataloader(self) -> MultimodalLoader:
        return self.loader(self.train_split)

    def val_dataloader(self) -> MultimodalLoader | list:
        return self.loader(self.val_split) if self.val_split else []

    def test_dataloader(self) -> list[MultimodalLoader]:
        return [self.loader(split) for split in self.test_splits]

    def bad_sample_report(self) -> dict[str, list[dict[str, int]]]:
        """Per split, the good/bad counts of every finished epoch."""
        return {split: tracker.history for split, tracker in self.trackers.items()}

"""LightningDataModule for AV-digits (and the pattern other datasets follow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from polyfuse.data.avdigits import MODALITIES, SPLITS, AVDigitsDataset
from polyfuse.data.collate import MultimodalCollate
from polyfuse.data.errors import BadSamplePolicy
from polyfuse.training.base_datamodule import PolyfuseDataModule


class AVDigitsDataModule(PolyfuseDataModule):
    """Train/val/test loaders over AV-digits; the test stage also evaluates ``test_real`` (human voice).

    Loaders, resume, DDP sharding and bad-sample counts come from
    :class:`~polyfuse.training.base_datamodule.PolyfuseDataModule`, as for every other dataset.

    Args:
        root: dataset directory. modalities: subset of ``image``, ``audio``, ``text``.
        text_field: ``hint`` or ``caption``. num_classes: checked against the dataset.
        batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, prefetch_factor, drop_last, seed, bad_samples: loader settings (:class:`PolyfuseDataModule`).
        missing: per-modality absence probability applied to every split (robustness experiments);
            ``missing_train`` overrides it for the training split only.
        test_splits: splits evaluated by ``trainer.test`` (names become metric prefixes).
        task: ``classification``, ``captioning`` (adds the ``caption_ids`` target) or ``vqa`` (one
            sample per question; ``answer_ids`` and ``caption_ids`` targets), see
            :class:`~polyfuse.data.avdigits.AVDigitsDataset`; or an interaction task (``redundant``,
            ``unique``, ``synergy``, ``mixed``: :mod:`polyfuse.data.avdigits_tasks`) whose pairs are drawn
            from ``pairing_seed`` (fixed across runs, so seeds vary only the training).
    """

    def __init__(self, root: str | Path, modalities: Sequence[str] = MODALITIES, text_field: str = "hint",
                 num_classes: int = 10, batch_size: int = 64, num_workers: int = 0, max_audio_seconds: float = 1.5,
                 max_text_length: int = 32, augment: bool = True, missing: dict[str, float] | None = None,
                 missing_train: dict[str, float] | None = None,
                 test_splits: Sequence[str] = ("test", "test_real"), task: str = "classification",
                 eval_batch_size: int | None = None, pin_memory: bool = False, persistent_workers: bool = True,
                 prefetch_factor: int | None = None, drop_last: bool = False, seed: int | None = None,
                 bad_samples: Mapping[str, Any] | BadSamplePolicy | None = None, pairing_seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                         pin_memory=pin_memory, persistent_workers=persistent_workers,
                         prefetch_factor=prefetch_factor, drop_last=drop_last, seed=seed, bad_samples=bad_samples)
        self.root, self.modalities = Path(root), list(modalities)
        self.text_field = text_field
        self.dataset_options = dict(text_field=text_field, max_audio_seconds=max_audio_seconds,
                                    max_text_length=max_text_length, task=task, pairing_seed=pairing_seed)
        self.task = task
        self.augment = augment
        self.missing = dict(missing or {})
        self.missing_train = self.missing if missing_train is None else dict(missing_train)
        self.test_splits = list(test_splits)
        self.num_classes = num_classes
        self.datasets: dict[str, AVDigitsDataset] = {}

    def dataset(self, split: str) -> AVDigitsDataset:
        if split not in self.datasets:
            missing = self.missing_train if split == "train" else self.missing
            self.datasets[split] = AVDigitsDataset(self.root, split, self.modalities, augment=self.augment,
                                                   missing=missing, missing_seed=SPLITS.index(split),
                                                   **self.dataset_options)
            if self.datasets[split].num_classes != self.num_classes:
                raise ValueError(f"data.num_classes={self.num_classes} but task {self.task!r} on "
                                 f"{self.root / 'info.json'} has {self.datasets[split].num_classes} classes")
        return self.datasets[split]

    def collate(self, split: str) -> MultimodalCollate:
        pad = self.dataset("train").pad_id if "text" in self.modalities else 0
        targets = {"classification": ("label",), "captioning": ("label", "caption_ids"),
                   "vqa": ("label", "caption_ids", "answer_ids")}.get(self.task, ("label",))
        return MultimodalCollate(self.modalities, targets=targets, pad_values={"text": pad},
                                 shapes={"image": (1, 32, 32)})

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": self.test_splits}.get(stage or "", ["train", "val", *self.test_splits])
        for split in splits:
            self.dataset(split)

"""LightningDataModule for AV-digits (and the pattern other datasets follow)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from polyfuse.data.avdigits import MODALITIES, SPLITS, AVDigitsDataset
from polyfuse.data.collate import MultimodalCollate
from polyfuse.training.samplers import evaluation_sampler


class AVDigitsDataModule(LightningDataModule):
    """Train/val/test loaders over AV-digits; the test stage also evaluates ``test_real`` (human voice).

    Args:
        root: dataset directory. modalities: subset of ``image``, ``audio``, ``text``.
        text_field: ``hint`` or ``caption``. num_classes: checked against the dataset. batch_size, num_workers: loader settings.
        missing: per-modality absence probability applied to every split (robustness experiments);
            ``missing_train`` overrides it for the training split only.
        test_splits: splits evaluated by ``trainer.test`` (names become metric prefixes).
        task: ``classification``, ``captioning`` (adds the ``caption_ids`` target) or ``vqa`` (one
            sample per question; ``answer_ids`` and ``caption_ids`` targets), see
            :class:`~polyfuse.data.avdigits.AVDigitsDataset`.
    """

    def __init__(self, root: str | Path, modalities: Sequence[str] = MODALITIES, text_field: str = "hint",
                 num_classes: int = 10, batch_size: int = 64, num_workers: int = 0, max_audio_seconds: float = 1.5,
                 max_text_length: int = 32, augment: bool = True, missing: dict[str, float] | None = None,
                 missing_train: dict[str, float] | None = None,
                 test_splits: Sequence[str] = ("test", "test_real"), task: str = "classification") -> None:
        super().__init__()
        self.root, self.modalities = Path(root), list(modalities)
        self.text_field, self.batch_size, self.num_workers = text_field, batch_size, num_workers
        self.dataset_options = dict(text_field=text_field, max_audio_seconds=max_audio_seconds,
                                    max_text_length=max_text_length, task=task)
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
                raise ValueError(f"data.num_classes={self.num_classes} but {self.root / 'info.json'} says "
                                 f"{self.datasets[split].num_classes}")
        return self.datasets[split]

    @property
    def collate(self) -> MultimodalCollate:
        pad = self.dataset("train").pad_id if "text" in self.modalities else 0
        targets = {"classification": ("label",), "captioning": ("label", "caption_ids"),
                   "vqa": ("label", "caption_ids", "answer_ids")}.get(self.task, ("label",))
        return MultimodalCollate(self.modalities, targets=targets, pad_values={"text": pad},
                                 shapes={"image": (1, 32, 32)})

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": self.test_splits}.get(stage or "", ["train", "val", *self.test_splits])
        for split in splits:
            self.dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # evaluation: an unpadded shard per rank, so every sample is scored exactly once under DDP
        sampler = None if shuffle else evaluation_sampler(self.dataset(split))
        return DataLoader(self.dataset(split), batch_size=self.batch_size, shuffle=shuffle, sampler=sampler,
                          num_workers=self.num_workers, collate_fn=self.collate,
                          persistent_workers=self.num_workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(split, shuffle=False) for split in self.test_splits]

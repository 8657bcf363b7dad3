"""One LightningDataModule for every reader: each ``configs/data/<name>.yaml`` is a choice of readers.

See docs/data.md for the configs to copy (COCO, Karpathy/Flickr30k, VQAv2, CSV, Hugging Face,
WebDataset shards, audio and audio-visual folders).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from lightning.pytorch import LightningDataModule
from torch.utils.data import Dataset, IterableDataset

from polyfuse.data.audio import AudioPipeline
from polyfuse.data.collate import MultimodalCollate
from polyfuse.data.decode import DecodedDataset, DecodedIterableDataset, SampleDecoder
from polyfuse.data.errors import BadSamplePolicy, BadSampleTracker
from polyfuse.data.image import ImagePipeline
from polyfuse.data.loader import BadSampleLoader
from polyfuse.data.reader import MODALITIES
from polyfuse.data.text import TextPipeline

log = logging.getLogger(__name__)
ReaderFactory = Callable[..., Dataset]


class MultimodalDataModule(LightningDataModule):
    """Loaders over any readers, decoded in workers, with bad input skipped and counted.

    Every split is a reader factory (``_partial_: true`` in configs) called in :meth:`setup`,
    wrapped with a :class:`~polyfuse.data.decode.SampleDecoder` (training transforms for the
    training split), batched by :class:`~polyfuse.data.collate.MultimodalCollate` (padding masks,
    ``present`` flags, the reader's targets) in a :class:`~polyfuse.data.loader.BadSampleLoader`.
    Streaming readers (:class:`~polyfuse.data.shards.ShardReader`) get this process's DDP rank.

    Args:
        splits: split name -> reader factory. modalities: of ``image``, ``audio``, ``text``.
        image, audio, text: the pipelines of the requested modalities.
        train_split, val_split: names in ``splits`` (``val_split=None``: no validation).
        test_splits: splits evaluated by ``trainer.test``, in order (names become metric prefixes).
        num_classes: read by classification heads (``${data.num_classes}``); not used here.
        batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, prefetch_factor:
            DataLoader settings (``eval_batch_size`` defaults to ``batch_size``).
        bad_samples: :class:`~polyfuse.data.errors.BadSamplePolicy` fields (``strict``,
            ``max_bad_fraction``, ``min_samples``, ``log_first``).
        drop_last: drop the last incomplete training batch.
        root: the dataset's base folder, for the config's interpolations only.
    """

    def __init__(self, splits: Mapping[str, ReaderFactory], modalities: Sequence[str] = ("image", "text"),
                 image: ImagePipeline | None = None, audio: AudioPipeline | None = None,
                 text: TextPipeline | None = None, train_split: str = "train", val_split: str | None = "val",
                 test_splits: Sequence[str] = ("test",), num_classes: int | None = None, batch_size: int = 64,
                 eval_batch_size: int | None = None, num_workers: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = True, prefetch_factor: int | None = None,
                 bad_samples: Mapping[str, Any] | BadSamplePolicy | None = None, drop_last: bool = False,
                 root: str | Path | None = None) -> None:
        super().__init__()
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise ValueError(f"data.modalities has unknown modalities {unknown}; valid: {', '.join(MODALITIES)}")
        used = [train_split, *([val_split] if val_split else []), *test_splits]
        missing = [name for name in used if name not in splits]
        if missing:
            raise ValueError(f"data.splits has no {missing}; it defines {list(splits)}")
        self.splits, self.modalities = dict(splits), list(modalities)
        self.pipelines = {"image": image, "audio": audio, "text": text}
        absent = [m for m in self.modalities if self.pipelines[m] is None]
        if absent:
            raise ValueError(f"data.modalities includes {absent} but data.{absent[0]} (its pipeline) is not set")
        self.train_split, self.val_split, self.test_splits = train_split, val_split, list(test_splits)
        self.num_classes, self.root = num_classes, root
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.persistent_workers, self.prefetch_factor, self.drop_last = persistent_workers, prefetch_factor, drop_last
        self.policy = bad_samples if isinstance(bad_samples, BadSamplePolicy) else BadSamplePolicy(**dict(bad_samples or {}))
        self.readers: dict[str, Dataset] = {}
        self.datasets: dict[str, Dataset] = {}
        self.trackers: dict[str, BadSampleTracker] = {}

    def reader(self, split: str) -> Dataset:
        """The raw reader of ``split`` (built once; ``scripts/write_shards.py`` uses it)."""
        if split not in self.readers:
            if split not in self.splits:
                raise KeyError(f"no split {split!r} in data.splits; it defines {list(self.splits)}")
            factory = self.splits[split]
            kwargs: dict[str, Any] = {}
            if _is_streaming_factory(factory):  # rank from the trainer; shuffle the training split
                given = getattr(factory, "keywords", {})
                defaults = {**self._rank_kwargs(), "shuffle": split == self.train_split}
                kwargs = {key: value for key, value in defaults.items() if given.get(key) is None}
            self.readers[split] = factory(**kwargs)
        return self.readers[split]

    def _rank_kwargs(self) -> dict[str, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        return {"rank": int(trainer.global_rank), "world_size": int(trainer.world_size)}

    def dataset(self, split: str) -> Dataset:
        """``split``'s reader wrapped with its decoder; index errors go to the split's tracker."""
        if split not in self.datasets:
            reader = self.reader(split)
            decoder = SampleDecoder(self.modalities, train=split == self.train_split, **self.pipelines)
            tracker = BadSampleTracker(split, self.policy)
            bad = list(getattr(reader, "bad_records", []))
            if bad:
                indexed = len(reader) if not isinstance(reader, IterableDataset) else 0
                tracker.add_index_errors(bad, total=indexed + len(bad))
            wrap = DecodedIterableDataset if isinstance(reader, IterableDataset) else DecodedDataset
            self.datasets[split] = wrap(reader, decoder, strict=self.policy.strict)
            self.trackers[split] = tracker
            self._check_labels()
        return self.datasets[split]

    def _check_labels(self) -> None:
        names = {split: tuple(r.labels) for split, r in self.readers.items() if getattr(r, "labels", None) is not None}
        if len(set(names.values())) > 1:
            raise ValueError(f"splits map class names to different label indices: {names}; "
                             "set the same labels list for every split")

    def collate(self, split: str) -> MultimodalCollate:
        reader = self.reader(split)
        pad = {"text": self.pipelines["text"].pad_id} if "text" in self.modalities else {}
        shapes = {"image": self.pipelines["image"].shape} if "image" in self.modalities else {}
        audio = self.pipelines["audio"]
        pad_to = {"audio": audio.max_samples} if "audio" in self.modalities and audio.pad_to_max else {}
        return MultimodalCollate(self.modalities, targets=tuple(getattr(reader, "targets", ())), pad_values=pad,
                                 shapes=shapes, pad_to=pad_to)

    def setup(self, stage: str | None = None) -> None:
        stages = {"fit": [self.train_split, self.val_split], "validate": [self.val_split], "test": self.test_splits,
                  "predict": self.test_splits}
        for split in stages.get(stage or "", [self.train_split, self.val_split, *self.test_splits]):
            if split:
                self.dataset(split)

    def loader(self, split: str) -> BadSampleLoader:
        """The DataLoader of ``split`` (shuffled, with ``drop_last``, for the training split)."""
        dataset = self.dataset(split)
        train = split == self.train_split
        workers = self.num_workers
        options: dict[str, Any] = {"persistent_workers": self.persistent_workers} if workers else {}
        if workers and self.prefetch_factor is not None:
            options["prefetch_factor"] = self.prefetch_factor
        return BadSampleLoader(dataset, batch_size=self.batch_size if train else self.eval_batch_size,
                               shuffle=train and not isinstance(dataset, IterableDataset), num_workers=workers,
                               collate_fn=self.collate(split), pin_memory=self.pin_memory,
                               drop_last=train and self.drop_last, tracker=self.trackers[split], **options)

    def train_dataloader(self) -> BadSampleLoader:
        return self.loader(self.train_split)

    def val_dataloader(self) -> BadSampleLoader | list:
        return self.loader(self.val_split) if self.val_split else []

    def test_dataloader(self) -> list[BadSampleLoader]:
        return [self.loader(split) for split in self.test_splits]

    def bad_sample_report(self) -> dict[str, list[dict[str, int]]]:
        """Per split, the good/bad counts of every finished epoch."""
        return {split: tracker.history for split, tracker in self.trackers.items()}


def _is_streaming_factory(factory: ReaderFactory) -> bool:
    target = getattr(factory, "func", factory)
    return isinstance(target, type) and issubclass(target, IterableDataset)

"""One LightningDataModule for every reader: each ``configs/data/<name>.yaml`` is a choice of readers.

See docs/data.md for the configs to copy (COCO, Karpathy/Flickr30k, VQAv2, CSV, Hugging Face,
WebDataset shards, audio and audio-visual folders).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from torch.utils.data import Dataset, IterableDataset

from polyfuse.data.audio import AudioPipeline
from polyfuse.data.collate import MultimodalCollate
from polyfuse.data.decode import DecodedDataset, DecodedIterableDataset, SampleDecoder
from polyfuse.data.errors import BadSamplePolicy
from polyfuse.data.image import ImagePipeline
from polyfuse.data.reader import MODALITIES, modality_kind
from polyfuse.data.text import TextPipeline
from polyfuse.data.video import VideoPipeline
from polyfuse.training.base_datamodule import PolyfuseDataModule

log = logging.getLogger(__name__)
ReaderFactory = Callable[..., Dataset]


class MultimodalDataModule(PolyfuseDataModule):
    """Loaders over any readers, decoded in workers, with bad input skipped and counted.

    Every split is a reader factory (``_partial_: true`` in configs) called in :meth:`setup`,
    wrapped with a :class:`~polyfuse.data.decode.SampleDecoder` (training transforms for the
    training split), batched by :class:`~polyfuse.data.collate.MultimodalCollate` (padding masks,
    ``present`` flags, the reader's targets) and loaded by
    :class:`~polyfuse.training.base_datamodule.PolyfuseDataModule` (resumable, DDP-sharded, bad
    samples counted). Streaming readers (:class:`~polyfuse.data.shards.ShardReader`) get this
    process's DDP rank and shard themselves.

    Args:
        splits: split name -> reader factory. modalities: of ``image``, ``audio``, ``text``, ``video``
            (and numbered ones, ``image_2``: a second image, decoded by the image pipeline).
        image, audio, text, video: the pipelines of the requested modalities (with ``audio`` and
            ``video``, a clip without its own audio file gives its sound track as audio).
        train_split, val_split: names in ``splits`` (``val_split=None``: no validation).
        test_splits: splits evaluated by ``trainer.test``, in order (names become metric prefixes).
        num_classes: read by classification heads (``${data.num_classes}``); not used here.
        batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, prefetch_factor, drop_last, seed, bad_samples: loader settings (:class:`PolyfuseDataModule`).
        root: the dataset's base folder, for the config's interpolations only.
    """

    def __init__(self, splits: Mapping[str, ReaderFactory], modalities: Sequence[str] = ("image", "text"),
                 image: ImagePipeline | None = None, audio: AudioPipeline | None = None,
                 text: TextPipeline | None = None, train_split: str = "train", val_split: str | None = "val",
                 test_splits: Sequence[str] = ("test",), num_classes: int | None = None, batch_size: int = 64,
                 eval_batch_size: int | None = None, num_workers: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = True, prefetch_factor: int | None = None,
                 bad_samples: Mapping[str, Any] | BadSamplePolicy | None = None, drop_last: bool = False,
                 root: str | Path | None = None, seed: int | None = None,
                 video: VideoPipeline | None = None) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                         pin_memory=pin_memory, persistent_workers=persistent_workers,
                         prefetch_factor=prefetch_factor, drop_last=drop_last, seed=seed, bad_samples=bad_samples)
        unknown = [m for m in modalities if modality_kind(m) not in MODALITIES]
        if unknown:
            raise ValueError(f"data.modalities has unknown modalities {unknown}; valid: {', '.join(MODALITIES)}")
        used = [train_split, *([val_split] if val_split else []), *test_splits]
        missing = [name for name in used if name not in splits]
        if missing:
            raise ValueError(f"data.splits has no {missing}; it defines {list(splits)}")
        self.splits, self.modalities = dict(splits), list(modalities)
        self.pipelines = {"image": image, "audio": audio, "text": text, "video": video}
        absent = [m for m in self.modalities if self.pipelines[modality_kind(m)] is None]
        if absent:
            raise ValueError(f"data.modalities includes {absent} but data.{modality_kind(absent[0])} "
                             "(its pipeline) is not set")
        self.train_split, self.val_split, self.test_splits = train_split, val_split, list(test_splits)
        self.num_classes, self.root = num_classes, root
        self.readers: dict[str, Dataset] = {}
        self.datasets: dict[str, Dataset] = {}

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
            tracker = self.tracker(split)
            bad = list(getattr(reader, "bad_records", []))
            if bad:
                indexed = len(reader) if not isinstance(reader, IterableDataset) else 0
                tracker.add_index_errors(bad, total=indexed + len(bad))
            wrap = DecodedIterableDataset if isinstance(reader, IterableDataset) else DecodedDataset
            self.datasets[split] = wrap(reader, decoder, strict=self.policy.strict)
            self._check_labels()
        return self.datasets[split]

    def _check_labels(self) -> None:
        names = {split: tuple(r.labels) for split, r in self.readers.items() if getattr(r, "labels", None) is not None}
        if len(set(names.values())) > 1:
            raise ValueError(f"splits map class names to different label indices: {names}; "
                             "set the same labels list for every split")

    def collate(self, split: str) -> MultimodalCollate:
        reader = self.reader(split)
        kinds = {m: modality_kind(m) for m in self.modalities}  # image_2 (NLVR2) is padded as an image
        pad = {m: self.pipelines["text"].pad_id for m, kind in kinds.items() if kind == "text"}
        shapes = {m: self.pipelines[kind].shape for m, kind in kinds.items() if kind in ("image", "video")}
        audio = self.pipelines["audio"]
        if "audio" in self.modalities and audio.max_samples:  # a batch without audio (all bad) keeps a valid shape
            shapes["audio"] = (audio.max_samples,)
        pad_to = {"audio": audio.max_samples} if "audio" in self.modalities and audio.pad_to_max else {}
        return MultimodalCollate(self.modalities, targets=tuple(getattr(reader, "targets", ())), pad_values=pad,
                                 shapes=shapes, pad_to=pad_to)

    def setup(self, stage: str | None = None) -> None:
        stages = {"fit": [self.train_split, self.val_split], "validate": [self.val_split], "test": self.test_splits,
                  "predict": self.test_splits}
        for split in stages.get(stage or "", [self.train_split, self.val_split, *self.test_splits]):
            if split:
                self.dataset(split)


def _is_streaming_factory(factory: ReaderFactory) -> bool:
    target = getattr(factory, "func", factory)
    return isinstance(target, type) and issubclass(target, IterableDataset)

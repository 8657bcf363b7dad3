"""Streaming WebDataset tar shards, split across DDP ranks and DataLoader workers.

A shard is a plain tar (https://github.com/webdataset/webdataset); consecutive members sharing a
key are one sample: ``<key>.jpg|png|webp`` (image), ``<key>.flac|wav|ogg`` (audio),
``<key>.mp4|webm|mkv`` (video; its sound track is the audio when there is no audio member), ``<key>.txt``
(text), ``<key>.json`` (id, targets, extras), ``<key>.<name>.npy`` (array targets such as VQA
scores). A missing member means the sample lacks that modality. Shards written by
:func:`polyfuse.data.shard_writer.write_shards` have an ``index.json`` beside them listing the
modalities, the targets and the samples per shard.

Every epoch the shard list is shuffled with ``seed + epoch`` -- identically on every rank --
then rank ``r`` of ``R`` takes shards ``r, r + R, ...`` (``webdataset.split_by_node``) and
worker ``w`` of ``W`` every ``W``-th of those (``webdataset.split_by_worker``): each sample is
read exactly once per epoch. Use at least ``R x W`` shards of equal size
(``write_shards(maxcount=...)``) so that every worker has work and ranks stay in step.

Under DDP every rank must run the same number of training steps, or the ranks that run out first
leave the others waiting in a gradient all-reduce forever. With ``balance`` (the default when
``world_size > 1``) every worker of every rank stops after the same number of samples: the
smallest share of any (rank, worker) this epoch, computed from the per-shard counts in
``index.json``. A few samples of the larger shares are skipped that epoch (a different few each
epoch, as the shard order is reshuffled); with equal shards nothing is. Evaluation splits, which
must see every sample exactly once, keep ``balance=False`` (uneven evaluation batches are safe:
metrics are reduced at the end).
A corrupt member or malformed JSON is one bad sample. A truncated, corrupt or missing shard yields
one bad sample (a placeholder row after collation) for every sample of it that could not be
delivered -- its count in ``index.json`` minus those read before the damage; without an index
entry, one -- so the counts stay exact and, with ``balance``, every rank still runs the same steps.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from polyfuse._optional import import_optional
from polyfuse.data.errors import BadSample
from polyfuse.data.folder import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS
from polyfuse.data.io import DataFileError, EncodedMedia
from polyfuse.data.reader import MODALITIES, SOURCE_KEY
from polyfuse.data.tar import TarFormatError, iter_tar
from polyfuse.data.video import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)
INDEX_FILE = "index.json"


def import_webdataset() -> Any:
    """The ``webdataset`` package, or an error saying how to install it."""
    return import_optional("webdataset", extra="data", feature="WebDataset shards")


def expand_shard_urls(urls: str | Path | Sequence[str]) -> list[str]:
    """Brace-expand (``train-{000000..000099}.tar``) and ``::``-split shard URLs; a directory
    stands for its ``*.tar`` files."""
    wds = import_webdataset()

    items = [urls] if isinstance(urls, (str, Path)) else list(urls)
    expanded: list[str] = []
    for item in items:
        path = Path(str(item)).expanduser()
        if path.is_dir():
            expanded.extend(str(p) for p in sorted(path.glob("*.tar")))
        else:
            expanded.extend(wds.shardlists.expand_urls(str(path) if path.exists() else str(item)))
    if not expanded:
        raise DataFileError(f"no shards match {urls!r}")
    return expanded


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` from ``torch.distributed`` when initialised, else ``RANK``/``WORLD_SIZE``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def read_shard_index(urls: Sequence[str]) -> dict[str, Any]:
    """The ``index.json`` beside local shards (``{}`` when there is none)."""
    first = Path(urls[0]).expanduser()
    index = first.parent / INDEX_FILE
    if not index.is_file():
        return {}
    try:
        return json.loads(index.read_text())
    except json.JSONDecodeError as error:
        raise DataFileError(f"{index}: malformed JSON ({error.msg})") from error


class ShardReader(IterableDataset):
    """Raw samples streamed from WebDataset shards (see module docstring).

    Args:
        urls: shard paths/URLs: a brace pattern, a list, or a directory of ``*.tar``.
        shuffle: shuffle shard order per epoch and samples in a buffer (training).
        shuffle_buffer: samples held for shuffling per worker. seed: base of the epoch seeds.
        rank, world_size: this process's DDP rank (default: ``torch.distributed``, else the
            ``RANK``/``WORLD_SIZE`` environment variables, else a single process).
        targets: target keys every sample's JSON has (default: from ``index.json``).
        balance: every worker of every rank yields the same number of samples (see the module
            docstring); ``None`` = when ``world_size > 1`` and ``shuffle`` (training). Needs the
            per-shard counts of ``index.json``.
    """

    def __init__(self, urls: str | Path | Sequence[str], shuffle: bool = False, shuffle_buffer: int = 1000, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None,
                 targets: Sequence[str] | None = None, balance: bool | None = None) -> None:
        super().__init__()
        self.urls = expand_shard_urls(urls)
        self.index = read_shard_index(self.urls)
        default_rank, default_world = distributed_rank()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, world_size={self.world_size})")
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, shuffle_buffer, seed
        self.targets = tuple(self.index.get("targets", ())) if targets is None else tuple(targets)
        self.modalities = tuple(self.index.get("modalities", MODALITIES))
        self.balance = (self.world_size > 1 and shuffle) if balance is None else balance
        self._shard_sizes = self._read_shard_sizes() if self.balance else self._listed_shard_sizes()
        self.bad_records: list[BadSample] = []
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()  # seen by persistent workers

    @property
    def num_samples(self) -> int | None:
        """Samples in all shards, when ``index.json`` says."""
        return self.index.get("total")

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (call on every rank, before iterating)."""
        self._epoch.fill_(epoch)

    def shards_for(self, worker: int, num_workers: int, rank: int | None = None) -> list[str]:
        """The shards ``rank``'s (default: this rank's) ``worker`` (of ``num_workers``) reads this
        epoch: the slicing of ``webdataset.split_by_node`` then ``split_by_worker``."""
        urls = list(self.urls)
        if self.shuffle:
            random.Random(self.seed + int(self._epoch)).shuffle(urls)
        mine = islice(urls, self.rank if rank is None else rank, None, self.world_size)
        return list(islice(mine, worker, None, num_workers))

    def samples_per_worker(self, num_workers: int) -> int:
        """With ``balance``: the samples each worker of each rank yields this epoch (the smallest
        share of any rank's worker; every rank computes the same number)."""
        return min(sum(self._shard_sizes[Path(url).name] for url in self.shards_for(worker, num_workers, rank))
                   for rank in range(self.world_size) for worker in range(num_workers))

    def _listed_shard_sizes(self) -> dict[str, int]:
        """``shard file name -> samples`` for the shards ``index.json`` lists (may be empty)."""
        return {Path(entry["url"]).name: int(entry["samples"]) for entry in self.index.get("shards", [])}

    def _read_shard_sizes(self) -> dict[str, int]:
        """``url -> samples`` from ``index.json`` (matched by file name)."""
        counts = {Path(entry["url"]).name: int(entry["samples"]) for entry in self.index.get("shards", [])}
        missing = [url for url in self.urls if Path(url).name not in counts]
        if missing:
            raise DataFileError(f"{missing[0]}: balancing DDP ranks (balance=true, the default with world_size > 1) "
                                f"needs its sample count in {INDEX_FILE} beside the shards ({len(missing)} shards "
                                "not listed); write shards with scripts/write_shards.py or set balance: false")
        return counts

    def __iter__(self) -> Iterator[dict[str, Any] | BadSample]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = self.shards_for(worker, num_workers)
        if not shards:
            log.warning("rank %d worker %d has no shard: %d shards for %d ranks x %d workers; write more, smaller "
                        "shards", self.rank, worker, len(self.urls), self.world_size, num_workers)
        stream: Iterator[dict[str, Any] | BadSample] = (s for url in shards for s in self._read_shard(url))
        if self.shuffle and self.shuffle_buffer > 1:
            rng = random.Random(f"{self.seed}/{int(self._epoch)}/{self.rank}/{worker}")
            stream = _buffer_shuffle(stream, self.shuffle_buffer, rng)
        if self.balance:
            stream = islice(stream, self.samples_per_worker(num_workers))
        yield from stream

    def _read_shard(self, url: str) -> Iterator[dict[str, Any] | BadSample]:
        key, members, delivered = None, {}, 0
        try:
            stream = import_webdataset().gopen(url) if "://" in url or url.startswith("pipe:") else open(url, "rb")
            with stream:
                for name, data in iter_tar(stream):
                    slash = name.rfind("/")
                    dot = name.find(".", slash + 1)
                    if dot <= slash + 1 or name[slash + 1:].startswith("__"):
                        continue  # no extension, a hidden file, or WebDataset metadata
                    prefix = name[:dot]
                    if prefix != key and members:
                        delivered += 1
                        yield self._raw(url, key, members)
                        members = {}
                    key = prefix
                    members[name[dot + 1:].lower()] = data
            if members:
                delivered += 1
                yield self._raw(url, key, members)
        except FileNotFoundError:
            yield from self._lost(url, delivered, None, "shard file not found")
        except (TarFormatError, OSError, EOFError) as error:
            yield from self._lost(url, delivered, key, f"corrupt or truncated shard after sample {key!r}: {error}")

    def _lost(self, url: str, delivered: int, key: str | None, reason: str) -> Iterator[BadSample]:
        """One :class:`BadSample` per sample of ``url`` not delivered: ``index.json``'s count minus
        ``delivered`` (at least one; one when the shard is not listed)."""
        expected = self._shard_sizes.get(Path(url).name)
        lost = max(expected - delivered, 1) if expected is not None else 1
        if expected is None:
            detail = f"{reason}; the rest of this shard is lost (it is not in {INDEX_FILE}: counted as 1 sample)"
        else:
            detail = f"{reason}; {lost} of its {expected} samples lost ({delivered} read)"
        first = str(Path(key).name) if key else "?"
        for position in range(lost):
            yield BadSample(first if position == 0 else f"{Path(url).name}#{delivered + position}", url, detail)

    def _raw(self, url: str, key: str, members: dict[str, bytes]) -> dict[str, Any] | BadSample:
        source = f"{url}:{key}"
        raw: dict[str, Any] = {"id": Path(key).name, SOURCE_KEY: source, **dict.fromkeys(MODALITIES)}
        for suffix, data in members.items():
            extension = suffix.rsplit(".", 1)[-1]
            try:
                if suffix == "json":
                    meta = json.loads(data)
                    if not isinstance(meta, dict):
                        raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
                    raw.update(meta)
                elif suffix in ("txt", "text"):
                    raw["text"] = data.decode("utf-8")
                elif extension in IMAGE_EXTENSIONS and "." not in suffix:
                    raw["image"] = EncodedMedia(data, f"{source}.{suffix}")
                elif extension in AUDIO_EXTENSIONS and "." not in suffix:
                    raw["audio"] = EncodedMedia(data, f"{source}.{suffix}")
                elif extension in VIDEO_EXTENSIONS and "." not in suffix:
                    raw["video"] = EncodedMedia(data, f"{source}.{suffix}")
                elif extension == "npy":
                    raw[suffix[: -len(".npy")]] = torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False))
            except (ValueError, UnicodeDecodeError, OSError, EOFError) as error:
                return BadSample(Path(key).name, f"{source}.{suffix}", f"malformed member {suffix!r}: {error}")
        return raw


def _buffer_shuffle(stream: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Yield ``stream`` in random order through a buffer of ``size`` items (WebDataset's shuffle)."""
    buffer: list[Any] = []
    for item in stream:
        if len(buffer) < size:
            buffer.append(item)
            continue
        index = rng.randrange(size)
        buffer[index], item = item, buffer[index]
        yield item
    rng.shuffle(buffer)
    yield from buffer

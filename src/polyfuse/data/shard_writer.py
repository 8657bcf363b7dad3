"""Write any reader's raw samples to WebDataset tar shards (``scripts/write_shards.py``).

Files are copied byte for byte (no re-encoding): a sample read back with
:class:`~polyfuse.data.shards.ShardReader` decodes to exactly the tensors the original reader
gives. Member layout: see :mod:`polyfuse.data.shards`. Keys are a running number (ids may
contain dots or slashes, which tar keys cannot); the original id is in the JSON member.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from polyfuse.data.errors import BadSample
from polyfuse.data.folder import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS
from polyfuse.data.io import DataFileError, EncodedMedia, MediaSource, read_bytes, source_name
from polyfuse.data.reader import MODALITIES, SOURCE_KEY
from polyfuse.data.shards import INDEX_FILE, import_webdataset
from polyfuse.data.video import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)
PARTIAL = ".partial"  # suffix of a shard being written; renamed when it is complete


def _media_extension(source: MediaSource, kind: str) -> str:
    name = source_name(source)
    extension = source.extension if isinstance(source, EncodedMedia) else Path(name).suffix[1:].lower()
    allowed = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS, "video": VIDEO_EXTENSIONS}[kind]
    if extension in allowed:
        return extension
    if kind == "video":
        raise DataFileError(f"cannot tell the video format of {name}: its extension is not one of "
                            f"{sorted(VIDEO_EXTENSIONS)}")
    data = read_bytes(source, kind)
    if kind == "image":
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as image:
                return {"jpeg": "jpg"}.get(image.format.lower(), image.format.lower())
        except Exception as error:  # PIL raises many kinds
            raise DataFileError(f"cannot tell the image format of {name}: {error}") from error
    import soundfile as sf

    try:
        return sf.info(io.BytesIO(data)).format.lower()
    except Exception as error:  # soundfile raises many kinds
        raise DataFileError(f"cannot tell the audio format of {name}: {error}") from error


def _json_value(key: str, value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.generic,)):
        return value.item()
    try:
        json.dumps(value)
    except TypeError as error:
        raise TypeError(f"field {key!r} of type {type(value).__name__} cannot be written to a shard's JSON") from error
    return value


def encode_sample(raw: Mapping[str, Any], key: str) -> dict[str, bytes | str]:
    """A raw sample as tar members ``{"__key__": key, "<ext>": bytes, ...}``; a missing file raises
    :class:`~polyfuse.data.io.DataFileError` naming it."""
    members: dict[str, Any] = {"__key__": key}
    meta: dict[str, Any] = {}
    for name, value in raw.items():
        if name == SOURCE_KEY or (name in MODALITIES and value is None):  # absent = no member
            continue
        if name in ("image", "audio", "video"):
            members[_media_extension(value, name)] = read_bytes(value, name)
        elif name == "text":
            members["txt"] = str(value).encode("utf-8")
        elif isinstance(value, (torch.Tensor, np.ndarray)):
            buffer = io.BytesIO()
            np.save(buffer, value.numpy() if isinstance(value, torch.Tensor) else value, allow_pickle=False)
            members[f"{name}.npy"] = buffer.getvalue()
        else:
            meta[name] = _json_value(name, value)
    members["json"] = json.dumps(meta).encode("utf-8")
    return members


def write_shards(samples: Iterable[Mapping[str, Any] | BadSample], pattern: str | Path, maxcount: int = 1000,
                 maxsize: float = 3e9, strict: bool = False, modalities: Iterable[str] = MODALITIES,
                 targets: Iterable[str] = ()) -> dict[str, Any]:
    """Write raw samples to ``pattern`` (e.g. ``out/train-%06d.tar``) and ``index.json`` beside them.

    Each shard is written as ``<name>.partial`` and renamed when complete, so an interrupted run
    never leaves a truncated ``.tar`` for a reader to find (``index.json`` comes last).

    A sample whose file is missing or unreadable is skipped and counted (``strict``: raises).
    Returns the index: ``{"shards": [{"url", "samples"}], "total", "skipped", "modalities", "targets"}``.
    """
    wds = import_webdataset()

    pattern = Path(pattern).expanduser()
    pattern.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    skipped: list[BadSample] = []
    written = 0

    def publish(partial: str) -> None:  # a shard appears under its name only once complete
        os.replace(partial, partial[: -len(PARTIAL)])

    # integer mtimes keep tarfile from adding a PAX header per member (2x slower to read back)
    writer = wds.ShardWriter(str(pattern) + PARTIAL, maxcount=maxcount, maxsize=maxsize, encoder=False, verbose=0,
                             mtime=0, post=publish)
    try:
        for raw in samples:
            if isinstance(raw, BadSample):
                skipped.append(raw)
                continue
            try:
                members = encode_sample(raw, f"{written:09d}")
            except DataFileError as error:
                if strict:
                    raise
                skipped.append(BadSample(str(raw.get("id", "?")), str(raw.get(SOURCE_KEY, "?")), str(error)))
                log.warning("write_shards: skipped %s: %s", raw.get("id"), error)
                continue
            writer.write(members)
            name = Path(writer.fname[: -len(PARTIAL)]).name
            counts[name] = counts.get(name, 0) + 1
            written += 1
    except BaseException:
        writer.post = None  # the shard being written is incomplete: close it and remove it
        writer.close()
        if writer.fname:
            Path(writer.fname).unlink(missing_ok=True)
        raise
    writer.close()
    index = {"shards": [{"url": name, "samples": n} for name, n in counts.items()], "total": written,
             "skipped": len(skipped), "modalities": list(modalities), "targets": list(targets)}
    (pattern.parent / INDEX_FILE).write_text(json.dumps(index, indent=1))
    return index

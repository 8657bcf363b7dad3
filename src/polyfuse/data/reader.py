"""The contract every reader follows, and the base class of the map-style ones.

A reader indexes a dataset once (annotation JSON, CSV, metadata, shard list) and returns *raw*
samples, cheap to produce and independent of any model::

    {"id": str,
     "image": path | EncodedMedia | None,     # None or missing key = the sample lacks it
     "audio": path | EncodedMedia | None,     # a video file here = its sound track
     "video": path | EncodedMedia | None,     # .mp4 / .webm / ... (polyfuse.data.video)
     "text": str | None,                      # caption / question; "" is bad input
     "image_2": ...,                          # more inputs of a kind: numbered (modality_kind)
     <target>: int | float | Tensor,          # every sample of a split has each target
     <extra>: anything (raw captions, answers, image ids),
     "__source__": str}                       # optional: the file/line a record came from

:class:`~polyfuse.data.decode.SampleDecoder` turns raw samples into tensors (in DataLoader
workers); :mod:`polyfuse.data.shard_writer` writes them to WebDataset shards unchanged.
Records that cannot be indexed (malformed lines, dangling ids) go to ``bad_records`` instead of
raising, and are counted with the rest of the bad input (see :mod:`polyfuse.data.errors`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from polyfuse.data.errors import BadSample
from polyfuse.data.io import DataFileError

MODALITIES = ("image", "audio", "text", "video")
SOURCE_KEY = "__source__"


def modality_kind(name: str) -> str:
    """The kind of a modality key: a numbered one (``image_2``, the second image of an NLVR2 pair) is
    decoded and padded as its kind (``image``); any other name is its own kind."""
    kind, _, number = name.rpartition("_")
    return kind if kind in MODALITIES and number.isdigit() else name


class RecordReader(Dataset):
    """A map-style reader over a list of raw records built in ``__init__``.

    Subclasses fill ``self.records`` (raw samples, see the module docstring), declare
    ``modalities`` and ``targets``, and call :meth:`skip` for records they cannot use.
    """

    modalities: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.bad_records: list[BadSample] = []

    def skip(self, source: str | Path, reason: str, sample_id: Any = "?") -> None:
        """Record that the entry at ``source`` cannot be used (counted, never silent)."""
        self.bad_records.append(BadSample(str(sample_id), str(source), reason))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.records[index]


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; a missing or malformed file raises an error naming it and ``what`` it should be."""
    import json

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataFileError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataFileError(f"{path}: malformed JSON ({error}); expected {what}") from error


def require_keys(data: Any, keys: tuple[str, ...], path: str | Path, what: str) -> None:
    """Raise an error naming ``path`` when the top-level JSON object lacks one of ``keys``."""
    if not isinstance(data, dict):
        raise DataFileError(f"{path}: expected a JSON object ({what}), got {type(data).__name__}")
    missing = [key for key in keys if key not in data]
    if missing:
        raise DataFileError(f"{path}: no {missing} field(s); is this {what}?")

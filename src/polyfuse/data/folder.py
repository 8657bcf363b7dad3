"""A folder of media files: audio clips, images, video clips, audio-visual pairs, with or without metadata.

Two layouts, both as in Hugging Face's imagefolder / audiofolder, extended to several modalities:

* **metadata** -- ``<root>/<split>/metadata.jsonl`` (or ``metadata.csv``), one record per sample::

      {"id": "clip_0007", "image": "frames/clip_0007.jpg", "audio": "audio/clip_0007.flac",
       "text": "a dog barks twice", "label": 3}

  Paths are relative to the metadata file. HF's single ``file_name`` column is understood too
  (its extension tells image from audio from video). A video clip list in the Kinetics / UCF-101
  layout -- a CSV ``path,label`` -- is ``metadata="train.csv", columns={"video": "path"}``; with
  ``audio`` requested, a clip's sound track is its audio (:class:`~polyfuse.data.decode.SampleDecoder`). A ``null`` / empty path or a missing key means the
  sample lacks that modality; a malformed JSON line is skipped and counted.
* **class folders** (no metadata file) -- ``<root>/<split>/<class>/<name>.{jpg,png,wav,flac,mp4,...}``:
  files with the same ``<class>/<name>`` stem are one sample (an image and a clip side by side
  make an audio-visual pair); the label is the class folder's index in ``labels``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

from polyfuse.data.io import DataFileError, iter_json_lines
from polyfuse.data.reader import MODALITIES, SOURCE_KEY, RecordReader
from polyfuse.data.video import VIDEO_EXTENSIONS

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm"})
AUDIO_EXTENSIONS = frozenset({"wav", "flac", "ogg", "mp3", "aiff", "aif", "opus"})
DEFAULT_COLUMNS = {"id": "id", "image": "image", "audio": "audio", "video": "video", "text": "text", "label": "label"}
MEDIA = ("image", "audio", "video")


def media_kind(name: str) -> str | None:
    """``"image"``, ``"audio"``, ``"video"`` or ``None`` from a file name's extension."""
    extension = Path(name).suffix[1:].lower()
    kinds = (("image", IMAGE_EXTENSIONS), ("audio", AUDIO_EXTENSIONS), ("video", VIDEO_EXTENSIONS))
    return next((kind for kind, extensions in kinds if extension in extensions), None)


class MediaFolderReader(RecordReader):
    """Raw samples from a media folder (see module docstring for the layouts).

    Args:
        root: dataset folder. split: sub-folder of ``root`` (``None``: ``root`` itself).
        columns: polyfuse key -> metadata column (defaults: ``id``, ``image``, ``audio``, ``video``,
            ``text``, ``label``; columns absent from every record are ignored).
        labels: class names in index order. Required when labels are strings, so that every
            split maps them to the same indices; class folders default to their sorted names.
        metadata: metadata file name inside the split folder (``.jsonl`` or ``.csv``).
    """

    def __init__(self, root: str | Path, split: str | None = None, columns: Mapping[str, str] | None = None,
                 labels: Sequence[str] | None = None, metadata: str = "metadata.jsonl") -> None:
        super().__init__()
        self.folder = Path(root).expanduser() / split if split else Path(root).expanduser()
        if not self.folder.is_dir():
            raise DataFileError(f"media folder not found: {self.folder}")
        self.columns = {**DEFAULT_COLUMNS, **dict(columns or {})}
        self.labels = list(labels) if labels is not None else None
        self.samples: list[dict[str, Any]] = []
        candidates = [self.folder / metadata, self.folder / "metadata.csv"]
        found = next((path for path in candidates if path.is_file()), None)
        if found is not None:
            self._read_metadata(found)
        else:
            self._read_class_folders()
        present = {key for sample in self.samples for key, value in sample.items() if value is not None}
        self.modalities = tuple(m for m in MODALITIES if m in present)
        self.targets = ("label",) if "label" in present else ()
        if not self.samples and not self.bad_records:
            raise DataFileError(f"{self.folder}: no media files and no metadata.jsonl/metadata.csv")

    def _records(self, path: Path):
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as handle:
                for record in csv.DictReader(handle):
                    yield 0, {k: (v if v != "" else None) for k, v in record.items()}, None
            return
        yield from iter_json_lines(path)

    def _read_metadata(self, path: Path) -> None:
        base = path.parent
        for number, record, problem in self._records(path):
            where = f"{path}, line {number}" if number else str(path)
            if problem is not None or record is None:
                self.skip(where, problem or "unreadable record", number)
                continue
            media = next((record[self.columns[m]] for m in MEDIA if record.get(self.columns[m])), None)
            sample_id = record.get(self.columns["id"]) or media or f"{base.name}:{number}"  # a CSV has no line numbers
            sample: dict[str, Any] = {"id": str(sample_id), SOURCE_KEY: where}
            file_name = record.get("file_name")
            if file_name and media_kind(file_name):
                sample[media_kind(file_name)] = str(base / file_name)
            for modality in MEDIA:
                value = record.get(self.columns[modality])
                if value:
                    sample[modality] = str(base / value)
                else:
                    sample.setdefault(modality, None)
            sample["text"] = record.get(self.columns["text"])
            sample["caption"] = sample["text"]
            label = record.get(self.columns["label"])
            if label is not None:
                try:
                    sample["label"] = self._label_index(label)
                except DataFileError:
                    raise
                except ValueError as error:
                    self.skip(where, str(error), sample["id"])
                    continue
            self.samples.append(sample)

    def _label_index(self, label: Any) -> int:
        if isinstance(label, int):
            return label
        if isinstance(label, str) and label.lstrip("-").isdigit():
            return int(label)
        if self.labels is None:
            raise DataFileError(f"{self.folder}: labels are class names ({label!r}); list them in order in "
                                "data.splits.<split>.labels so that every split uses the same indices")
        if label not in self.labels:
            raise ValueError(f"label {label!r} is not one of the configured labels {self.labels}")
        return self.labels.index(label)

    def _read_class_folders(self) -> None:
        classes = sorted(p.name for p in self.folder.iterdir() if p.is_dir())
        labels = self.labels if self.labels is not None else classes
        unknown = [name for name in classes if name not in labels]
        if unknown:
            raise DataFileError(f"{self.folder}: class folders {unknown} are not in the configured labels {labels}")
        self.labels = list(labels)
        for name in classes:
            grouped: dict[str, dict[str, Any]] = {}
            for file in sorted((self.folder / name).rglob("*")):
                kind = media_kind(file.name) if file.is_file() else None
                if kind is None:
                    continue
                stem = file.relative_to(self.folder).with_suffix("").as_posix()
                sample = grouped.setdefault(stem, {"id": stem, **dict.fromkeys(MEDIA), "text": None,
                                                   "label": self.labels.index(name), SOURCE_KEY: str(file)})
                sample[kind] = str(file)
            self.samples.extend(grouped.values())

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return dict(self.samples[index])

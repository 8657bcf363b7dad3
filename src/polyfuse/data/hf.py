"""Hugging Face ``datasets`` on local files: imagefolder, parquet, ``save_to_disk`` directories.

Media columns are read undecoded (``Image(decode=False)`` / ``Audio(decode=False)``) and decoded by
polyfuse's pipelines in the workers, so a corrupt file is one skipped, counted sample rather than
an exception inside ``datasets``. Note: ``datasets`` >= 4 needs ``torchcodec`` + FFmpeg to *build*
an ``audiofolder``; without them read that layout with
:class:`~polyfuse.data.folder.MediaFolderReader` (``data=audio_folder``), which uses soundfile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from polyfuse._optional import import_optional
from polyfuse.data.io import DataFileError, EncodedMedia
from polyfuse.data.reader import MODALITIES, SOURCE_KEY, RecordReader

FOLDER_BUILDERS = ("imagefolder", "audiofolder")


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` directory."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def load_hf_dataset(path: str | Path, split: str, builder: str | None = None, data_files: Any = None,
                    **load_kwargs: Any) -> Any:
    """A ``datasets.Dataset`` from local files (nothing is downloaded).

    ``builder=None`` with a ``save_to_disk`` directory uses ``load_from_disk`` (``split`` picks from
    a ``DatasetDict``); otherwise ``load_dataset(builder or path, data_dir=..., data_files=...,
    split=split)``, e.g. ``builder="imagefolder"`` or ``"parquet"``.
    """
    datasets = import_optional("datasets", extra="data", feature="Hugging Face datasets (data=hf)")

    path = Path(path).expanduser()
    if builder is None and path.is_dir() and is_saved_dataset(path):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataFileError(f"{path}: no split {split!r}; it has {list(loaded)}")
            return loaded[split]
        return loaded
    if builder is None and not path.exists():
        raise DataFileError(f"Hugging Face dataset directory not found: {path}")
    kwargs = dict(load_kwargs)
    if data_files is not None:
        kwargs["data_files"] = data_files
    elif builder is not None:
        kwargs["data_dir"] = str(path)
    try:
        return datasets.load_dataset(builder or str(path), split=split, **kwargs)
    except ImportError as error:
        hint = " (read the folder with data=audio_folder instead)" if builder == "audiofolder" else ""
        raise DataFileError(f"cannot load {builder or 'dataset'} at {path}: {error}{hint}") from error
    except (FileNotFoundError, ValueError) as error:
        raise DataFileError(f"cannot load {builder or 'dataset'} at {path}, split {split!r}: {error}") from error


class HFDatasetReader(RecordReader):
    """Rows of a local Hugging Face dataset as raw samples, columns mapped from config.

    Args:
        path: dataset directory (imagefolder root, parquet folder, ``save_to_disk`` output).
        split: split name. builder: ``imagefolder``, ``parquet``, ``json``, ``csv``, ... or ``None``
            for ``save_to_disk`` directories and auto-detection.
        columns: polyfuse key -> dataset column. ``image``/``audio``/``text`` are modalities
            (media cells may be ``{"bytes", "path"}`` structs, paths or bytes; a list of texts
            gives its first as ``text`` and all as the extra ``captions``); ``id`` names the id
            column; every other key becomes a target (e.g. ``label: label``).
        extra_columns: columns passed through as batch extras.
        data_files, load_kwargs: passed to ``datasets.load_dataset`` (e.g. ``cache_dir``).
    """

    def __init__(self, path: str | Path, split: str = "train", builder: str | None = None,
                 columns: Mapping[str, str] | None = None, extra_columns: Sequence[str] = (),
                 data_files: Any = None, load_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        datasets = import_optional("datasets", extra="data", feature="Hugging Face datasets (data=hf)")

        self.path, self.split = Path(path).expanduser(), split
        self.dataset = load_hf_dataset(self.path, split, builder, data_files, **dict(load_kwargs or {}))
        self.columns = dict(columns or {"image": "image", "text": "text"})
        names = set(self.dataset.column_names)
        wanted = list(self.columns.values()) + list(extra_columns)
        missing = [column for column in wanted if column not in names]
        if missing:
            raise DataFileError(f"{self.path} (split {split!r}) has no column(s) {missing}; columns: "
                                f"{sorted(names)}. Map them with data.splits.{split}.columns")
        for modality, kind in (("image", datasets.Image), ("audio", datasets.Audio)):
            column = self.columns.get(modality)
            if column is not None and isinstance(self.dataset.features[column], kind):
                self.dataset = self.dataset.cast_column(column, kind(decode=False))
        self.modalities = tuple(m for m in MODALITIES if m in self.columns)
        self.targets = tuple(key for key in self.columns if key not in MODALITIES and key != "id")
        self.extra_columns = tuple(extra_columns)

    def __len__(self) -> int:
        return len(self.dataset)

    def _media(self, value: Any, where: str) -> Any:
        if value is None or isinstance(value, (str, Path)):
            return value
        if isinstance(value, (bytes, bytearray)):
            return EncodedMedia(bytes(value), where)
        if isinstance(value, Mapping):
            data, path = value.get("bytes"), value.get("path")
            if data is not None:
                return EncodedMedia(bytes(data), f"{where} ({path})" if path else where)
            return path
        raise DataFileError(f"{where}: unsupported media cell of type {type(value).__name__}")

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.dataset[index]
        where = f"{self.path}[{self.split}][{index}]"
        sample: dict[str, Any] = {"id": str(row[self.columns["id"]]) if "id" in self.columns else f"{self.split}/{index}",
                                  SOURCE_KEY: where}
        for key, column in self.columns.items():
            value = row[column]
            if key in ("image", "audio"):
                sample[key] = self._media(value, f"{where}.{column}")
            elif key == "text" and isinstance(value, list):
                sample["text"] = value[0] if value else None
                sample["captions"] = list(value)
            elif key != "id":
                sample[key] = value
        if "text" in sample:
            sample.setdefault("caption", sample["text"])
        for column in self.extra_columns:
            sample[column] = row[column]
        return sample

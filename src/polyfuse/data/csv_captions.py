"""CSV/TSV of (image path, caption) rows, as open_clip's ``CsvDataset`` reads them.

open_clip's defaults are kept: tab separator, columns ``filepath`` and ``title``
(``--csv-separator``, ``--csv-img-key``, ``--csv-caption-key``). Relative paths are resolved
against ``image_root`` (default: the CSV's folder). Cells are read as strings, so a caption
``NA`` stays ``NA``; an empty caption is bad input, counted when decoded; a row without an image
path, or a malformed row, is skipped and counted while indexing.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from polyfuse.data.io import DataFileError
from polyfuse.data.reader import SOURCE_KEY, RecordReader


class CsvCaptionsReader(RecordReader):
    """Raw samples ``{"id", "image": path, "text": caption, "caption"}`` (+ ``label`` if configured).

    Args:
        path: the CSV/TSV file. image_key, caption_key: column names. separator: ``"\\t"`` or ``","``.
        image_root: base of relative image paths (default: the file's folder).
        label_key: optional integer label column (becomes the target ``label``).
    """

    modalities = ("image", "text")

    def __init__(self, path: str | Path, image_key: str = "filepath", caption_key: str = "title",
                 separator: str = "\t", image_root: str | Path | None = None, label_key: str | None = None) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise DataFileError(f"captions CSV not found: {self.path}")
        root = Path(image_root).expanduser() if image_root is not None else self.path.parent
        self.targets = ("label",) if label_key else ()
        self.images: list[str] = []
        self.texts: list[str] = []
        self.row_labels: list[int] = []  # one class index per row (not class names: see `labels` of folder readers)
        self.lines: list[int] = []
        with open(self.path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter=separator)
            header = next(reader, None)
            if header is None:
                raise DataFileError(f"{self.path} is empty; expected a header with {image_key!r} and {caption_key!r}")
            columns = {name: index for index, name in enumerate(header)}
            needed = [image_key, caption_key] + ([label_key] if label_key else [])
            missing = [name for name in needed if name not in columns]
            if missing:
                raise DataFileError(f"{self.path}: no column(s) {missing}; the header has {header} "
                                    f"(separator {separator!r}; open_clip's default is tab)")
            for row in reader:
                line = reader.line_num
                where = f"{self.path}, line {line}"
                if not row:
                    continue
                if len(row) != len(header):
                    self.skip(where, f"malformed row: {len(row)} fields, header has {len(header)}", line)
                    continue
                image = row[columns[image_key]].strip()
                if not image:
                    self.skip(where, f"row has no {image_key!r}", line)
                    continue
                if label_key:
                    try:
                        self.row_labels.append(int(row[columns[label_key]]))
                    except ValueError:
                        self.skip(where, f"{label_key!r} is not an integer: {row[columns[label_key]]!r}", line)
                        continue
                self.images.append(str(root / image))
                self.texts.append(row[columns[caption_key]])
                self.lines.append(line)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        text = self.texts[index]
        sample = {"id": f"{self.path.stem}:{self.lines[index]}", "image": self.images[index], "text": text,
                  "caption": text, SOURCE_KEY: f"{self.path}, line {self.lines[index]}"}
        if self.targets:
            sample["label"] = self.row_labels[index]
        return sample

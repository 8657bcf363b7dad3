"""NLVR2 (Suhr et al., "A Corpus for Reasoning About Natural Language Grounded in Photographs", ACL 2019):
one statement, a pair of photographs, true or false.

Files (https://github.com/lil-lab/nlvr, ``nlvr2/data``): ``train.json``, ``dev.json``, ``test1.json``,
JSON lines despite the extension, one record per statement::

    {"identifier": "dev-850-0-0", "sentence": "...", "label": "True", "directory": "75", ...}

The images of ``identifier`` ``<split>-<set>-<pair>-<sentence>`` are ``<split>-<set>-<pair>-img0.png``
(left) and ``-img1.png`` (right), under ``<directory>/`` for the training split (its images are spread
over folders ``0..99``) and directly in the split's image folder otherwise.

Samples: ``{"id": identifier, "text": sentence, "image": left, "image_2": right, "label": 0 | 1}``
(``label``: index in ``labels``, ``False`` = 0); ``image_2`` is decoded by the image pipeline
(:func:`~polyfuse.data.reader.modality_kind`), so ``data.modalities: [image, image_2, text]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from polyfuse.data.io import DataFileError
from polyfuse.data.reader import SOURCE_KEY, RecordReader

LABELS = ("False", "True")


class NLVR2Reader(RecordReader):
    """One sample per statement of an NLVR2 JSON-lines file, with its two image paths.

    Args:
        path: the split's ``.json`` (JSON lines). image_root: the split's image folder.
        image_pattern: file of an image relative to ``image_root``, formatted with ``prefix``
            (identifier without the sentence number), ``index`` (0 left, 1 right) and ``directory``
            (``""`` when the record has none); default ``{directory}/{prefix}-img{index}.png``.
        labels: class names in index order (default ``("False", "True")``).

    A malformed line, a record without ``identifier`` / ``sentence`` / a label in ``labels`` is
    skipped and counted (``bad_records``).
    """

    modalities = ("image", "image_2", "text")
    targets = ("label",)

    def __init__(self, path: str | Path, image_root: str | Path,
                 image_pattern: str = "{directory}/{prefix}-img{index}.png", labels: Sequence[str] = LABELS) -> None:
        super().__init__()
        self.path, self.image_root = Path(path).expanduser(), Path(image_root).expanduser()
        self.image_pattern, self.labels = image_pattern, [str(label) for label in labels]
        if not self.path.is_file():
            raise DataFileError(f"NLVR2 statements not found: {self.path} (expected nlvr2/data/<split>.json)")
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    self._add(line, f"{self.path}, line {number}")

    def _add(self, line: str, where: str) -> None:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            self.skip(where, f"malformed JSON line: {error}")
            return
        if not isinstance(record, dict) or not all(key in record for key in ("identifier", "sentence", "label")):
            self.skip(where, "an NLVR2 record needs identifier, sentence and label")
            return
        identifier, label = str(record["identifier"]), str(record["label"])
        if label not in self.labels:
            self.skip(where, f"label {label!r} is not one of {self.labels}", identifier)
            return
        prefix = identifier.rsplit("-", 1)[0]
        directory = str(record.get("directory", ""))
        names = [self.image_pattern.format(prefix=prefix, index=index, directory=directory) for index in (0, 1)]
        images = [self.image_root / name.lstrip("/") for name in names]  # no directory: "/name" is not absolute
        self.records.append({"id": identifier, "text": str(record["sentence"]), "image": str(images[0]),
                             "image_2": str(images[1]), "label": self.labels.index(label), SOURCE_KEY: where})

"""Image-caption annotations: COCO ``captions_*.json`` and Karpathy split JSON (COCO, Flickr30k).

Both readers give raw samples ``{"id", "image": path, "text": caption, "caption", "image_id",
"captions"}`` with the target ``image_id`` (int: COCO id, or Karpathy ``imgid`` when there is no
``cocoid``), which retrieval heads use to tell that two captions show the same image.

``unit="caption"`` yields one sample per (image, caption) pair, the usual training unit;
``unit="image"`` yields one sample per image with its first caption as ``text`` and all of them
in ``captions``, the unit of retrieval evaluation. An image without any caption is kept with
``text = None`` (absent modality) in both units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from polyfuse.data.io import DataFileError
from polyfuse.data.reader import SOURCE_KEY, RecordReader, read_json, require_keys

UNITS = ("caption", "image")


class _CaptionIndex(RecordReader):
    """Images (path, id) and captions grouped per image; ``__getitem__`` builds raw samples."""

    modalities = ("image", "text")
    targets = ("image_id",)

    def __init__(self, annotations: str | Path, unit: str) -> None:
        super().__init__()
        if unit not in UNITS:
            raise ValueError(f"caption unit must be one of {UNITS}, got {unit!r}")
        self.annotations, self.unit = Path(annotations).expanduser(), unit
        self.image_paths: list[str] = []
        self.image_ids: list[int] = []
        self.captions: list[list[str]] = []
        self.items: list[tuple[int, int]] = []  # (image index, caption index or -1 = no caption)

    def _add_image(self, path: str, image_id: int, captions: list[str]) -> None:
        index = len(self.image_paths)
        self.image_paths.append(path)
        self.image_ids.append(image_id)
        self.captions.append(captions)
        if self.unit == "image" or not captions:
            self.items.append((index, 0 if captions else -1))
        else:
            self.items.extend((index, c) for c in range(len(captions)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, caption = self.items[index]
        captions = self.captions[image]
        text = captions[caption] if caption >= 0 else None
        image_id = self.image_ids[image]
        suffix = f"_{caption}" if self.unit == "caption" and caption >= 0 else ""
        return {"id": f"{image_id}{suffix}", "image": self.image_paths[image], "text": text, "caption": text,
                "captions": list(captions), "image_id": image_id,
                SOURCE_KEY: f"{self.annotations} (image {image_id}, caption {caption})"}


class CocoCaptionsReader(_CaptionIndex):
    """COCO captions: ``annotations/captions_{train,val}{2014,2017}.json`` + an image folder.

    The file holds ``images: [{id, file_name, ...}]`` and ``annotations: [{id, image_id,
    caption}]``; images are ``image_root / file_name``. An annotation naming an unknown image,
    or without a string ``caption``, is skipped and counted.

    Args:
        annotations: the captions JSON. image_root: folder of the split's images (e.g. ``train2017``).
        unit: ``"caption"`` or ``"image"`` (see module docstring).
    """

    def __init__(self, annotations: str | Path, image_root: str | Path, unit: str = "caption") -> None:
        super().__init__(annotations, unit)
        data = read_json(self.annotations, "a COCO captions file (captions_*.json)")
        require_keys(data, ("images", "annotations"), self.annotations, "a COCO captions file")
        root = Path(image_root).expanduser()
        grouped: dict[int, list[str]] = {}
        files: dict[int, str] = {}
        for image in data["images"]:
            if "id" not in image or "file_name" not in image:
                self.skip(self.annotations, f"image entry without id/file_name: {str(image)[:80]}")
                continue
            files[image["id"]] = image["file_name"]
            grouped[image["id"]] = []
        for annotation in data["annotations"]:
            image_id, caption = annotation.get("image_id"), annotation.get("caption")
            where = f"{self.annotations} (annotation {annotation.get('id', '?')})"
            if image_id not in grouped:
                self.skip(where, f"caption for unknown image_id {image_id}", annotation.get("id", "?"))
            elif not isinstance(caption, str):
                self.skip(where, "annotation has no string 'caption'", annotation.get("id", "?"))
            else:
                grouped[image_id].append(caption)
        for image_id in sorted(files):
            self._add_image(str(root / files[image_id]), int(image_id), grouped[image_id])


class KarpathyCaptionsReader(_CaptionIndex):
    """Karpathy split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``, ``dataset_flickr8k.json``).

    The file holds ``images: [{filename, filepath?, split, sentences: [{raw, ...}], imgid,
    cocoid?}]``; images are ``image_root / filepath / filename`` (COCO: ``filepath`` is
    ``train2014``/``val2014``; Flickr has no ``filepath``). COCO's ``restval`` images join the
    training split unless ``restval_in_train=False``.

    Args:
        annotations: the Karpathy JSON. image_root: folder the ``filepath``/``filename`` are relative to.
        split: ``train``, ``val``, ``test`` (or ``restval``). unit: ``"caption"`` or ``"image"``.
    """

    def __init__(self, annotations: str | Path, image_root: str | Path, split: str = "train", unit: str = "caption",
                 restval_in_train: bool = True) -> None:
        super().__init__(annotations, unit)
        data = read_json(self.annotations, "a Karpathy split file (dataset_*.json)")
        require_keys(data, ("images",), self.annotations, "a Karpathy split file")
        root = Path(image_root).expanduser()
        wanted: Sequence[str] = ("train", "restval") if split == "train" and restval_in_train else (split,)
        found = set()
        for number, image in enumerate(data["images"]):
            found.add(image.get("split"))
            if image.get("split") not in wanted:
                continue
            if "filename" not in image:
                self.skip(f"{self.annotations} (images[{number}])", "image entry has no 'filename'")
                continue
            captions = []
            for sentence in image.get("sentences", []):
                if isinstance(sentence, dict) and isinstance(sentence.get("raw"), str):
                    captions.append(sentence["raw"])
                else:
                    self.skip(f"{self.annotations} (images[{number}])", "sentence without a string 'raw'")
            image_id = int(image.get("cocoid", image.get("imgid", number)))
            self._add_image(str(root / image.get("filepath", "") / image["filename"]), image_id, captions)
        if not self.items:
            raise DataFileError(f"{self.annotations}: no image in split {split!r}; splits in the file: {sorted(map(str, found))}")

"""Video-caption annotations in the MSR-VTT layout (Xu et al., 2016): ``video_id`` -> captions.

Two JSON shapes are read:

* the official ``train_val_videodatainfo.json`` / ``test_videodatainfo.json``::

      {"videos": [{"video_id": "video0", "split": "train", ...}, ...],
       "sentences": [{"video_id": "video0", "caption": "a man is singing", ...}, ...]}

* a plain mapping ``{"video0": ["a man is singing", ...], ...}`` (the layout many retrieval code
  bases, CLIP4Clip's included, convert to).

Videos are ``video_root / <video_id>.<extension>``. ``unit="caption"`` yields one sample per
(video, caption) pair (training); ``unit="video"`` one per video with its first caption as
``text`` and every caption in ``captions`` (retrieval evaluation, e.g. the 1k-A test set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyfuse.data.io import DataFileError
from polyfuse.data.reader import SOURCE_KEY, RecordReader, read_json

UNITS = ("caption", "video")


class MSRVTTReader(RecordReader):
    """Raw samples ``{"id", "video": path, "text", "caption", "captions", "video_id"}`` (see module docstring).

    A sentence naming an unknown video, or without a string caption, is skipped and counted; a
    video without any caption is kept with ``text = None`` (absent modality).

    Args:
        annotations: the JSON file. video_root: folder of the ``<video_id>.<extension>`` files.
        split: keep only videos of this ``split`` (official layout only; ``None`` = all).
        unit: ``"caption"`` or ``"video"``. extension: the video files' extension.
    """

    modalities = ("video", "text")

    def __init__(self, annotations: str | Path, video_root: str | Path, split: str | None = None,
                 unit: str = "caption", extension: str = "mp4") -> None:
        super().__init__()
        if unit not in UNITS:
            raise ValueError(f"MSR-VTT unit must be one of {UNITS}, got {unit!r}")
        self.annotations, self.unit = Path(annotations).expanduser(), unit
        root, extension = Path(video_root).expanduser(), extension.lstrip(".")
        captions = self._read_captions(read_json(self.annotations, "MSR-VTT annotations (video_id -> captions)"), split)
        if not captions:
            raise DataFileError(f"{self.annotations}: no video{'' if split is None else f' in split {split!r}'}")
        for video_id, texts in captions.items():
            path = str(root / f"{video_id}.{extension}")
            chosen = [None] if not texts else texts[:1] if unit == "video" else texts
            for number, text in enumerate(chosen):
                suffix = f"_{number}" if unit == "caption" and text is not None else ""
                self.records.append({"id": f"{video_id}{suffix}", "video": path, "text": text, "caption": text,
                                     "captions": list(texts), "video_id": video_id,
                                     SOURCE_KEY: f"{self.annotations} (video {video_id})"})

    def _read_captions(self, data: Any, split: str | None) -> dict[str, list[str]]:
        if isinstance(data, dict) and "sentences" in data:
            videos = [v for v in data.get("videos", []) if split is None or v.get("split") == split]
            grouped: dict[str, list[str]] = {str(v["video_id"]): [] for v in videos if "video_id" in v}
            if not data.get("videos"):  # sentences only: every video they name
                grouped = {str(s.get("video_id")): [] for s in data["sentences"] if s.get("video_id") is not None}
            for number, sentence in enumerate(data["sentences"]):
                video_id, caption = sentence.get("video_id"), sentence.get("caption")
                where = f"{self.annotations} (sentences[{number}])"
                if str(video_id) not in grouped:
                    if split is None or not data.get("videos"):
                        self.skip(where, f"caption for unknown video_id {video_id!r}", video_id)
                elif not isinstance(caption, str) or not caption.strip():
                    self.skip(where, "sentence has no string 'caption'", video_id)
                else:
                    grouped[str(video_id)].append(caption)
            return grouped
        if isinstance(data, dict):
            grouped = {}
            for video_id, texts in data.items():
                texts = [texts] if isinstance(texts, str) else texts
                if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                    self.skip(self.annotations, f"video {video_id!r}: captions must be a list of strings", video_id)
                    continue
                grouped[str(video_id)] = list(texts)
            return grouped
        raise DataFileError(f"{self.annotations}: expected a JSON object (video_id -> captions, or MSR-VTT's "
                            f"videos/sentences), got {type(data).__name__}")

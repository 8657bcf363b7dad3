"""Writers of fixture files in the real formats (images, audio clips, JSON), used by the data tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from polyfuse.data import SampleDecoder
from polyfuse.data.errors import BadSample

WORDS = ["a", "the", "dog", "cat", "man", "on", "with", "red", "car", "is", "what", "color", "how", "many",
         "yes", "no", "two", "sits", "runs", "bench", "photo", "of", "barks", "?"]


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (40, 32)) -> Path:
    """A small RGB image; the format follows the extension (``.jpg``, ``.png``, ...)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def write_audio(path: Path, seed: int = 0, seconds: float = 0.5, rate: int = 16000) -> Path:
    """A short noise clip; the format follows the extension (``.wav``, ``.flac``)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate)
    return path


def corrupt(path: Path) -> Path:
    """Overwrite a file with bytes no decoder accepts (a truncated download, a disk error)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00not a real media file\xff" * 4)
    return path


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def decode_all(reader: Any, pipelines: dict[str, Any], modalities=("image", "text")) -> list[dict | BadSample]:
    decoder = SampleDecoder(modalities, **pipelines)
    return [decoder(reader[i]) for i in range(len(reader))]

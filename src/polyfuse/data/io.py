"""Reading media files with errors that name the file.

A media source is a path (``str`` / ``Path``) or :class:`EncodedMedia` (the bytes of a file held
in memory: a tar member of a WebDataset shard, a Hugging Face ``{"bytes", "path"}`` cell).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np
import torch
from torch import Tensor

from polyfuse.errors import UserInputError


class DataFileError(UserInputError, ValueError):
    """A dataset file is missing, unreadable or malformed; the message names the file."""


@dataclass(frozen=True)
class EncodedMedia:
    """The encoded bytes of a media file held in memory.

    Attributes:
        data: the file's bytes (JPEG, PNG, FLAC, WAV, ...).
        name: where they came from, used in error messages and for the format's extension,
            e.g. ``"shards/train-000003.tar:COCO_val2014_000000391895.jpg"``.
    """

    data: bytes
    name: str

    @property
    def extension(self) -> str:
        """Lower-case extension without the dot (``"jpg"``), ``""`` when the name has none."""
        suffix = Path(self.name.rsplit(":", 1)[-1]).suffix
        return suffix[1:].lower()


MediaSource = Union[str, Path, EncodedMedia]


def iter_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """``(line number, record, problem)`` for each non-blank line of a JSON-lines file: ``problem`` says
    why a line is not a JSON object (``record`` is then ``None``), so a caller skips or raises, naming
    ``path`` and the line."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, None, f"malformed JSON line ({error.msg})"
                continue
            if not isinstance(record, dict):
                yield number, None, f"expected a JSON object, got {type(record).__name__}"
                continue
            yield number, record, None


def source_name(source: MediaSource) -> str:
    """The file name an error message should show for ``source``."""
    return source.name if isinstance(source, EncodedMedia) else str(source)


def open_source(source: MediaSource, kind: str):
    """A binary file object for ``source``; a missing file raises :class:`DataFileError` naming it."""
    if isinstance(source, EncodedMedia):
        return io.BytesIO(source.data)
    path = Path(source)
    if not path.is_file():
        raise DataFileError(f"{kind} file not found: {path}")
    return open(path, "rb")


def native_source(source: MediaSource, kind: str):
    """What a C decoder reads fastest: the path string of a file (checked to exist), or a
    ``BytesIO`` for :class:`EncodedMedia` (soundfile reads a path natively but a Python file object
    through per-read callbacks)."""
    if isinstance(source, EncodedMedia):
        return io.BytesIO(source.data)
    path = Path(source)
    if not path.is_file():
        raise DataFileError(f"{kind} file not found: {path}")
    return str(path)


def read_bytes(source: MediaSource, kind: str = "media") -> bytes:
    """The encoded bytes of ``source`` (reads the file for a path)."""
    if isinstance(source, EncodedMedia):
        return source.data
    with open_source(source, kind) as handle:
        return handle.read()


def open_image(path: MediaSource, mode: str = "L", draft_size: tuple[int, int] | None = None):
    """Decode an image (path or :class:`EncodedMedia`) to a loaded PIL image in ``mode``.

    With ``draft_size = (W, H)`` a JPEG is decoded directly at the smallest power-of-two reduction
    that is still at least that large (PIL's ``draft``), which skips most of the inverse DCT and
    colour conversion when the model input is much smaller than the stored image.

    Every decoder failure raises :class:`DataFileError` naming the file: not an image, truncated
    or corrupt data (``OSError``, ``SyntaxError``, ``ValueError``, ``EOFError``, ...), and a
    decompression bomb (PIL's ``DecompressionBombError`` above ``2 * Image.MAX_IMAGE_PIXELS``, and
    ``DecompressionBombWarning`` above ``MAX_IMAGE_PIXELS`` when warnings are turned into errors).
    """
    from PIL import Image, UnidentifiedImageError

    name = source_name(path)
    try:
        with open_source(path, "image") as handle, Image.open(handle) as image:
            if draft_size is not None and image.format == "JPEG":
                image.draft(mode if mode in ("L", "RGB") else "RGB", draft_size)
            return image.convert(mode)  # convert() loads the pixels and returns a new image
    except DataFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataFileError(f"cannot decode image file {name}: decompression bomb: {error}") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, RuntimeError, TypeError,
            IndexError, struct.error, zlib.error) as error:
        raise DataFileError(f"cannot decode image file {name}: {type(error).__name__}: {error}") from error


def load_image(path: MediaSource, mode: str = "L", draft_size: tuple[int, int] | None = None) -> Tensor:
    """Decode an image to a ``uint8`` tensor ``(C, H, W)`` (``mode`` as in PIL: ``"L"``, ``"RGB"``);
    ``path`` and ``draft_size`` as in :func:`open_image`."""
    array = np.asarray(open_image(path, mode, draft_size))
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)


def load_audio(path: MediaSource, sample_rate: int | None = None) -> Tensor:
    """Decode a wav/flac/ogg file (path or :class:`EncodedMedia`) with soundfile to a mono
    ``float32`` waveform ``(T,)``.

    When ``sample_rate`` is given and differs from the file's, the clip is resampled with a
    polyphase filter (``scipy.signal.resample_poly`` when available, else linear interpolation).
    """
    import soundfile as sf

    path = path if isinstance(path, EncodedMedia) else Path(path)
    try:
        audio, rate = sf.read(native_source(path, "audio"), dtype="float32", always_2d=True)
    except DataFileError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, EOFError) as error:
        raise DataFileError(f"cannot decode audio file {source_name(path)}: {error}") from error
    audio = audio.mean(axis=1)
    if audio.size == 0:
        raise DataFileError(f"audio file {source_name(path)} is empty")
    if sample_rate is not None and rate != sample_rate:
        audio = resample(audio, rate, sample_rate)
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample a 1-D signal from ``rate_in`` to ``rate_out`` Hz."""
    from math import gcd

    try:
        from scipy.signal import resample_poly
    except ImportError:  # scipy is optional; fall back to linear interpolation
        n_out = int(round(audio.size * rate_out / rate_in))
        return np.interp(np.linspace(0, audio.size - 1, n_out), np.arange(audio.size), audio).astype(np.float32)
    g = gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    # the same filter resample_poly designs by default, designed once per rate pair
    return resample_poly(audio, up, down, window=_polyphase_filter(up, down, audio.dtype.str)).astype(np.float32)


@lru_cache(maxsize=32)
def _polyphase_filter(up: int, down: int, dtype: str) -> np.ndarray:
    """``resample_poly``'s default low-pass (Kaiser, beta 5, cutoff 1 / max(up, down)); read-only."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    taps = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(dtype)
    taps.setflags(write=False)
    return taps

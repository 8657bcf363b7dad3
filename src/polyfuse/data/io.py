"""Reading media files with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor


class DataFileError(ValueError):
    """A dataset file is missing, unreadable or malformed; the message names the file."""


def load_image(path: str | Path, mode: str = "L") -> Tensor:
    """Decode an image file to a ``uint8`` tensor ``(C, H, W)`` (``mode`` as in PIL: ``"L"``, ``"RGB"``)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataFileError(f"cannot decode image file {path}: {error}") from error
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)


def load_audio(path: str | Path, sample_rate: int | None = None) -> Tensor:
    """Decode a wav/flac/ogg file with soundfile to a mono ``float32`` waveform ``(T,)``.

    When ``sample_rate`` is given and differs from the file's, the clip is resampled with a
    polyphase filter (``scipy.signal.resample_poly`` when available, else linear interpolation).
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"audio file not found: {path}")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise DataFileError(f"cannot decode audio file {path}: {error}") from error
    audio = audio.mean(axis=1)
    if audio.size == 0:
        raise DataFileError(f"audio file {path} is empty")
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
    return resample_poly(audio, rate_out // g, rate_in // g).astype(np.float32)

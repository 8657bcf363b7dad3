"""Tiny video files made on the fly with PyAV (8 frames of 32x32 unless asked otherwise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polyfuse.data.video_writer import write_video


def moving_bar(frames: int = 8, size: int = 32) -> np.ndarray:
    """``uint8 (T, size, size, 3)``: a white vertical bar moving right, one position per frame."""
    clip = np.zeros((frames, size, size, 3), dtype=np.uint8)
    width = max(size // frames, 2)
    for index in range(frames):
        start = (index * width) % size
        clip[index, :, start: start + width] = 255
    return clip


def write_clip(path: Path, frames: int = 8, size: int = 32, sound: bool = True, seconds: float = 1.0,
               rate: int = 8000) -> Path:
    """A moving-bar clip at 8 fps, with a 440 Hz tone as its sound track when ``sound``."""
    audio = None
    if sound:
        audio = (0.3 * np.sin(np.arange(int(seconds * rate)) * 2 * np.pi * 440 / rate)).astype(np.float32)
    return write_video(path, moving_bar(frames, size), fps=8, audio=audio, sample_rate=rate)

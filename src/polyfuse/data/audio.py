"""Audio clips: decode (soundfile), crop, resample to the model's rate.

Only the cropped window is read from disk, so a 10-second crop of an hour-long file costs as much
as a 10-second file. Padding happens in the collate function, which also builds the ``(B, T)``
mask (``MultimodalCollate(pad_to={"audio": max_samples})`` for a fixed length); the log-mel
front end runs inside the model (:class:`polyfuse.encoders.audio.LogMelSpectrogram`), whose
``sample_rate`` must equal this pipeline's. A video file's sound track is read with PyAV
(:func:`polyfuse.data.video.read_sound_track`) and cropped the same way; a video without one gives
``None`` (the sample's audio is absent).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from polyfuse.data.io import DataFileError, MediaSource, native_source, resample, source_name
from polyfuse.data.video import is_video_source, read_sound_track

CROPS = ("random", "start", "center")


class AudioPipeline:
    """A mono ``float32 (T,)`` waveform at ``sample_rate`` with ``T <= max_samples``.

    Args:
        sample_rate: output rate in Hz (files at other rates are resampled with a polyphase
            filter). max_seconds: longer clips are cropped; ``None`` keeps the whole clip.
        train_crop, eval_crop: where the window starts: ``"random"``, ``"start"`` or ``"center"``.
        pad_to_max: pad every clip to ``max_samples`` in the collate function (fixed shapes,
            e.g. for ``torch.compile``); the mask still marks only the real samples.
    """

    def __init__(self, sample_rate: int = 16000, max_seconds: float | None = 10.0, train_crop: str = "random",
                 eval_crop: str = "start", pad_to_max: bool = False) -> None:
        for name, crop in (("train_crop", train_crop), ("eval_crop", eval_crop)):
            if crop not in CROPS:
                raise ValueError(f"audio {name} must be one of {CROPS}, got {crop!r}")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"audio max_seconds must be positive or null, got {max_seconds}")
        if pad_to_max and max_seconds is None:
            raise ValueError("audio pad_to_max needs max_seconds")
        self.sample_rate, self.max_seconds = int(sample_rate), max_seconds
        self.train_crop, self.eval_crop, self.pad_to_max = train_crop, eval_crop, pad_to_max

    @property
    def max_samples(self) -> int | None:
        return None if self.max_seconds is None else int(round(self.max_seconds * self.sample_rate))

    def __call__(self, source: MediaSource, train: bool = False) -> Tensor | None:
        """Read the window of ``source``; a missing, corrupt or empty file raises
        :class:`~polyfuse.data.io.DataFileError` naming it. A video file gives its sound track, or
        ``None`` when it has none."""
        import soundfile as sf

        name = source_name(source)
        crop = self.train_crop if train else self.eval_crop
        if is_video_source(source):
            return self._sound_track(source, crop)
        try:
            with sf.SoundFile(native_source(source, "audio")) as clip:
                rate, frames = clip.samplerate, clip.frames
                window = frames if self.max_seconds is None else min(frames, math.ceil(self.max_seconds * rate))
                start = _window_start(frames, window, crop)
                if start:
                    clip.seek(start)
                audio = clip.read(window, dtype="float32", always_2d=True)
        except DataFileError:
            raise
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, EOFError) as error:
            raise DataFileError(f"cannot decode audio file {name}: {error}") from error
        if audio.shape[0] == 0:
            raise DataFileError(f"audio file {name} is empty")
        mono = audio[:, 0] if audio.shape[1] == 1 else audio.mean(axis=1)
        if rate != self.sample_rate:
            mono = resample(mono, rate, self.sample_rate)
        if self.max_samples is not None:
            mono = mono[: self.max_samples]
        return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))

    def _sound_track(self, source: MediaSource, crop: str) -> Tensor | None:
        """The ``crop`` window of a video file's sound track (decoded whole, already at ``sample_rate``)."""
        track = read_sound_track(source, self.sample_rate)
        if track is None or self.max_samples is None:
            return track
        start = _window_start(track.shape[0], min(track.shape[0], self.max_samples), crop)
        return track[start: start + self.max_samples].clone()


def _window_start(frames: int, window: int, crop: str) -> int:
    slack = frames - window
    if slack <= 0 or crop == "start":
        return 0
    if crop == "center":
        return slack // 2
    return int(torch.randint(0, slack + 1, ()).item())

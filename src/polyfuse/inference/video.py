"""Video inputs of :mod:`polyfuse.inference`: a clip file -> the model's ``video`` tensor, as in evaluation.

:class:`VideoPreprocessor` wraps the run's :class:`~polyfuse.data.video.VideoPipeline` with its
evaluation settings (centre segments or a centred fixed-rate window, the evaluation resize / crop,
normalisation), so a file given to :meth:`~polyfuse.inference.InferenceModel.predict` is decoded and
sampled exactly as the run's data module does for its test split. The sound track of the same file
is the audio input (:func:`sound_track_source`), as :class:`~polyfuse.data.decode.SampleDecoder` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from polyfuse.data.io import EncodedMedia
from polyfuse.data.video import VideoPipeline, is_video_source

__all__ = ["VideoPreprocessor", "sound_track_source", "VIDEO_SETTINGS"]

#: the VideoPipeline arguments that decide the evaluation output (augmentation and crop scale do not)
VIDEO_SETTINGS = ("num_frames", "sampling", "fps", "size", "mode", "mean", "std", "resize", "interpolation")


class VideoPreprocessor:
    """A video file (path or :class:`~polyfuse.data.io.EncodedMedia`) -> ``float32 (T, C, size, size)``,
    ``T <= num_frames``; a floating-point tensor ``(T, C, size, size)`` is taken as an already
    preprocessed clip and only checked.

    The clip is decoded with PyAV and sampled with the evaluation rule of ``sampling`` (no random
    offsets, no random crop or flip). A missing, corrupt or truncated file raises
    :class:`~polyfuse.data.io.DataFileError` naming it (inference has no bad-sample skipping).
    """

    def __init__(self, num_frames: int = 8, sampling: str = "segments", fps: float | None = None, size: int = 224,
                 mode: str = "RGB", mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 resize: str = "shortest", interpolation: str = "bilinear") -> None:
        self.pipeline = VideoPipeline(num_frames, sampling, fps, size, mode, mean, std, resize,
                                      train_crop_scale=None, interpolation=interpolation)
        self.settings = dict(num_frames=int(num_frames), sampling=sampling, fps=fps, size=int(size), mode=mode,
                             mean=None if mean is None else [float(m) for m in mean],
                             std=None if std is None else [float(s) for s in std], resize=resize,
                             interpolation=interpolation)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The longest clip ``(num_frames, C, size, size)``."""
        return self.pipeline.shape

    def __call__(self, clip: Any) -> Tensor:
        if isinstance(clip, Tensor) and clip.is_floating_point():
            frames, *frame_shape = clip.shape
            if clip.dim() != 4 or tuple(frame_shape) != self.shape[1:] or not 1 <= frames <= self.shape[0]:
                raise ValueError(f"a float video tensor is taken as a preprocessed clip and must have shape "
                                 f"(T, {', '.join(map(str, self.shape[1:]))}) with 1 <= T <= {self.shape[0]}, got "
                                 f"{tuple(clip.shape)} (pass the video file to have it decoded)")
            return clip.detach().cpu().to(torch.float32)
        if not isinstance(clip, (str, Path, EncodedMedia)):
            raise TypeError(f"video input must be a video file path, an EncodedMedia or a preprocessed float tensor "
                            f"(T, {', '.join(map(str, self.shape[1:]))}); got {type(clip).__name__}")
        return self.pipeline(clip, train=False)


def sound_track_source(video: Any) -> Any:
    """The audio source standing in for a sample without audio: its video file when it is one
    (``None`` otherwise; a file without a sound track then gives ``present=False``)."""
    return video if is_video_source(video) else None

"""Which frames of a clip a model sees: TSN segment sampling and fixed-rate sampling.

Both return sorted frame indices into a clip of ``num_frames`` decoded frames, at most
``num_samples`` of them. A clip with fewer frames than asked for gives every frame once (the
collate function pads the clip and its frame mask marks the real frames); no frame is repeated.

* :func:`segment_indices` -- Temporal Segment Networks (Wang et al., 2016): the clip is cut into
  ``num_samples`` equal segments and one frame is taken from each, at a random offset in training
  and at the segment's centre in evaluation.
* :func:`fixed_rate_indices` -- frames ``stride = video_fps / fps`` apart (a window of
  ``num_samples`` frames at ``fps`` frames per second, as SlowFast / X3D samplers do), the window
  placed at random in training and centred in evaluation.
"""

from __future__ import annotations

import torch

__all__ = ["segment_indices", "fixed_rate_indices", "SAMPLINGS"]

SAMPLINGS = ("segments", "fps")


def _randint(high: int, generator: torch.Generator | None) -> int:
    """A uniform integer in ``[0, high)`` from torch's RNG (seeded per sample by the loader)."""
    return int(torch.randint(0, high, (), generator=generator).item()) if high > 1 else 0


def segment_indices(num_frames: int, num_samples: int, train: bool,
                    generator: torch.Generator | None = None) -> list[int]:
    """TSN sampling: one frame from each of ``num_samples`` equal segments of ``range(num_frames)``.

    Segment ``k`` covers ``[k * n / T, (k + 1) * n / T)``; training picks a random frame in it,
    evaluation the centre one. ``num_frames <= num_samples``: every frame, in order.
    """
    if num_frames <= 0:
        return []
    if num_frames <= num_samples:
        return list(range(num_frames))
    length = num_frames / num_samples
    indices = []
    for segment in range(num_samples):
        start = int(round(segment * length))
        end = max(int(round((segment + 1) * length)), start + 1)
        offset = _randint(end - start, generator) if train else (end - start - 1) // 2
        indices.append(min(start + offset, num_frames - 1))
    return indices


def fixed_rate_indices(num_frames: int, num_samples: int, video_fps: float, fps: float, train: bool,
                       generator: torch.Generator | None = None) -> list[int]:
    """``num_samples`` frames at ``fps`` frames per second from a clip decoded at ``video_fps``.

    The frames are ``round(start + k * video_fps / fps)`` for ``k < num_samples``; the window starts at
    random in training, centred in evaluation (at 0 when the clip is shorter than the window, which
    then gives fewer frames).
    """
    if num_frames <= 0:
        return []
    if video_fps <= 0 or fps <= 0:
        raise ValueError(f"fixed-rate sampling needs positive rates, got video_fps={video_fps}, fps={fps}")
    stride = video_fps / fps
    span = int(round((num_samples - 1) * stride)) + 1  # frames the window covers
    slack = num_frames - span
    start = 0 if slack <= 0 else (_randint(slack + 1, generator) if train else slack // 2)
    indices = sorted({int(round(start + k * stride)) for k in range(num_samples)})
    return [index for index in indices if index < num_frames]

"""Write a clip (frames + optional sound track) to a video file with PyAV.

Used by the AV-digits clip builder (``scripts/build_avdigits_video.py``) and by the tests, which make
tiny videos on the fly. MPEG-4 Part 2 video and AAC audio (FFmpeg's own encoders, bit-exact mode) in
an MP4 container by default: the same inputs give the same bytes in any process. ``libx264`` (also
shipped inside PyAV) compresses better but its output here depended on what the process had encoded
before, so the embedded clips do not use it.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from polyfuse.data.video import import_av

__all__ = ["write_video"]


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB -> the planar ``uint8 (3H/2, W)`` array of a ``yuv420p`` frame (BT.601,
    limited range, chroma averaged over 2x2 blocks). Converting here rather than in FFmpeg's swscale
    keeps the encoder's input, and so the file, independent of swscale's code paths."""
    rgb = frame.astype(np.float64) / 255.0
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    height, width = luma.shape
    blue_diff = ((blue - luma) / 1.772).reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    red_diff = ((red - luma) / 1.402).reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    planes = [16 + 219 * luma, 128 + 224 * blue_diff, 128 + 224 * red_diff]
    y, u, v = (np.clip(np.round(plane), 0, 255).astype(np.uint8) for plane in planes)
    return np.concatenate([y, u.reshape(height // 4, width), v.reshape(height // 4, width)])


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8, audio: np.ndarray | None = None,
                sample_rate: int = 8000, codec: str = "mpeg4", bit_rate: int = 64000, crf: int = 23,
                audio_codec: str = "aac", audio_bit_rate: int = 24000) -> Path:
    """Encode ``frames: uint8 (T, H, W, 3)`` (RGB) at ``fps`` and, when given, ``audio: float32 (S,)``
    (mono, in ``[-1, 1]``, at ``sample_rate``) as the sound track. ``H`` must be a multiple of 4 and
    ``W`` even (4:2:0 chroma planes stored whole rows). ``bit_rate``: the video's target (``codec``
    other than ``libx264``); ``crf``: ``libx264``'s quality. The encoders run single-threaded."""
    av = import_av()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[1] % 4 or frames.shape[2] % 2:
        raise ValueError(f"write_video expects uint8 frames (T, H, W, 3) with H a multiple of 4 and W even, "
                         f"got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        video = container.add_stream(codec, rate=Fraction(int(fps)))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.codec_context.thread_count = 1
        if codec == "libx264":
            video.options = {"crf": str(crf), "preset": "veryfast"}
        else:
            video.bit_rate, video.options = int(bit_rate), {"flags": "+bitexact"}
        sound = None
        if audio is not None:
            sound = container.add_stream(audio_codec, rate=int(sample_rate))
            sound.layout, sound.bit_rate = "mono", int(audio_bit_rate)
            sound.options = {"flags": "+bitexact"}
        video.codec_context.time_base = Fraction(1, int(fps))
        for index, frame in enumerate(frames):  # explicit timestamps: x264's rate control reads frame durations
            picture = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
            picture.pts, picture.time_base = index, Fraction(1, int(fps))
            container.mux(video.encode(picture))
        container.mux(video.encode(None))
        if sound is not None:
            samples = np.ascontiguousarray(np.asarray(audio, dtype=np.float32)[None])
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = int(sample_rate), 0, Fraction(1, int(sample_rate))
            container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    return path

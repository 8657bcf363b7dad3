"""Write a clip (frames + optional sound track) to a video file with PyAV.

Used by the AV-digits clip builder (``scripts/build_avdigits_video.py``) and by the tests, which make
tiny videos on the fly. H.264 video (``libx264``, shipped inside PyAV's FFmpeg) and AAC audio in an
MP4 container by default.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from polyfuse.data.video import import_av

__all__ = ["write_video"]


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8, audio: np.ndarray | None = None,
                sample_rate: int = 8000, codec: str = "libx264", crf: int = 23, audio_codec: str = "aac",
                audio_bit_rate: int = 24000) -> Path:
    """Encode ``frames: uint8 (T, H, W, 3)`` (RGB) at ``fps`` and, when given, ``audio: float32 (S,)``
    (mono, in ``[-1, 1]``, at ``sample_rate``) as the sound track. ``H`` and ``W`` must be even
    (4:2:0 chroma). The encoders run single-threaded, so the same inputs give the same bytes."""
    av = import_av()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_video expects uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        video = container.add_stream(codec, rate=Fraction(int(fps)))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.codec_context.thread_count = 1
        if codec == "libx264":
            video.options = {"crf": str(crf), "preset": "veryfast"}
        sound = None
        if audio is not None:
            sound = container.add_stream(audio_codec, rate=int(sample_rate))
            sound.layout, sound.bit_rate = "mono", int(audio_bit_rate)
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(video.encode(None))
        if sound is not None:
            samples = np.ascontiguousarray(np.asarray(audio, dtype=np.float32)[None])
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = int(sample_rate)
            container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    return path

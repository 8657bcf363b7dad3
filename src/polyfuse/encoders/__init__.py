"""Encoders: every one maps a :class:`~polyfuse.batch.ModalityInput` to an :class:`~polyfuse.batch.Encoded`.

Checkpoint builders (timm, open_clip, Hugging Face, torchvision) live in
:mod:`polyfuse.encoders.pretrained`; see docs/encoders.md.
"""

from polyfuse.encoders.audio import AudioCNNEncoder
from polyfuse.encoders.audio_frontend import LogMelSpectrogram, Resample, mel_filter_bank
from polyfuse.encoders.base import Encoder
from polyfuse.encoders.clip_text import CLIPTextEncoder
from polyfuse.encoders.cnn import MobileNetV2Encoder
from polyfuse.encoders.loading import CheckpointError
from polyfuse.encoders.text import TextTransformerEncoder
from polyfuse.encoders.video import FrameTemporalEncoder, VideoViTEncoder
from polyfuse.encoders.vision import ViTEncoder

__all__ = ["Encoder", "ViTEncoder", "TextTransformerEncoder", "CLIPTextEncoder", "AudioCNNEncoder",
           "MobileNetV2Encoder", "FrameTemporalEncoder", "VideoViTEncoder", "LogMelSpectrogram", "Resample", "mel_filter_bank", "CheckpointError"]

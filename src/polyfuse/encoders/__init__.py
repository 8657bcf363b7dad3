"""Encoders: every one maps a :class:`~polyfuse.batch.ModalityInput` to an :class:`~polyfuse.batch.Encoded`.

Checkpoint builders (timm, open_clip, Hugging Face, torchvision) live in
:mod:`polyfuse.encoders.pretrained`; see docs/encoders.md. Classes and builders are registered by
name (the registry of :mod:`polyfuse.registry`, as fusions and heads)::

    >>> from polyfuse import encoders
    >>> encoders.available()           # ['audio_cnn', 'clip_text', ..., 'vit', 'vit_open_clip', 'vit_timm']
    >>> vit = encoders.build("vit", image_size=32, patch_size=4, in_chans=1, dim=64)
    >>> text = encoders.build("hf", "path/to/all-MiniLM-L6-v2")   # a builder: its own arguments
"""

from typing import Any

from polyfuse.encoders.audio import AudioCNNEncoder
from polyfuse.encoders.audio_frontend import LogMelSpectrogram, Resample, mel_filter_bank
from polyfuse.encoders.base import Encoder
from polyfuse.encoders.clip_text import CLIPTextEncoder
from polyfuse.encoders.cnn import MobileNetV2Encoder
from polyfuse.encoders.loading import CheckpointError
from polyfuse.encoders.pretrained import (clip_text_from_open_clip, encoder_from_hf, mobilenet_v2_from_torchvision,
                                          vit_from_open_clip, vit_from_timm)
from polyfuse.encoders.text import TextTransformerEncoder
from polyfuse.encoders.vilt_patches import ViLTPatchEncoder
from polyfuse.encoders.video import FrameTemporalEncoder, VideoViTEncoder
from polyfuse.encoders.vision import ViTEncoder
from polyfuse.registry import Registry

ENCODERS: Registry[Any] = Registry("encoder", tag=None)
"""The encoder registry: classes (built from scratch) and checkpoint builders, by name."""
for _name, _builder in {
    "vit": ViTEncoder, "text_transformer": TextTransformerEncoder, "clip_text": CLIPTextEncoder,
    "audio_cnn": AudioCNNEncoder, "mobilenet_v2": MobileNetV2Encoder, "vilt_patches": ViLTPatchEncoder,
    "video_frame_temporal": FrameTemporalEncoder, "video_vit": VideoViTEncoder,
    "hf": encoder_from_hf, "vit_timm": vit_from_timm, "vit_open_clip": vit_from_open_clip,
    "clip_text_open_clip": clip_text_from_open_clip, "mobilenet_v2_torchvision": mobilenet_v2_from_torchvision,
}.items():
    ENCODERS.register(_name)(_builder)
del _name, _builder
register = ENCODERS.register
"""Decorator: ``@register("<name>")`` makes a encoder buildable by name."""
available = ENCODERS.available
"""The registered encoder names, sorted."""
get_class = ENCODERS.get
"""The encoder registered under a name; a KeyError listing the valid names otherwise."""


def build(name: str, *args: Any, **options: Any) -> Encoder:
    """Build a registered encoder: ``build("vit", image_size=32, patch_size=4, dim=64)``,
    ``build("vit_timm", "path/to/vit.safetensors")``; an unknown name's error lists the valid ones."""
    return ENCODERS.build(name, *args, **options)


__all__ = ["Encoder", "ViTEncoder", "TextTransformerEncoder", "CLIPTextEncoder", "AudioCNNEncoder",
           "MobileNetV2Encoder", "ViLTPatchEncoder", "FrameTemporalEncoder", "VideoViTEncoder", "LogMelSpectrogram",
           "Resample", "mel_filter_bank", "CheckpointError", "ENCODERS", "register", "available", "get_class", "build"]

"""Encoders: every one maps a :class:`~polyfuse.batch.ModalityInput` to an :class:`~polyfuse.batch.Encoded`."""

from polyfuse.encoders.audio import AudioCNNEncoder, LogMelSpectrogram, mel_filter_bank
from polyfuse.encoders.base import Encoder
from polyfuse.encoders.text import TextTransformerEncoder
from polyfuse.encoders.vision import ViTEncoder

__all__ = ["Encoder", "ViTEncoder", "TextTransformerEncoder", "AudioCNNEncoder", "LogMelSpectrogram", "mel_filter_bank"]

"""Audio: a PANNs-style CNN encoder over the log-mel front end of :mod:`polyfuse.encoders.audio_frontend`.

The CNN follows the CNN6/CNN10/CNN14 design of PANNs (Kong et al., 2020): blocks of 3x3 conv + BN
+ ReLU with 2x2 pooling (average, as PANNs; max, as VGGish -- Hershey et al., 2017), frequency
averaged at the end, leaving a sequence of time tokens. Depth and widths come from ``channels``:
``(64, 128, 256, 512)`` is CNN10, ``(64, 128, 256, 512, 1024, 2048)`` CNN14.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.encoders.audio_frontend import LogMelSpectrogram, Resample, hz_to_mel, mel_filter_bank, mel_to_hz
from polyfuse.encoders.base import Encoder, Output
from polyfuse.masking import zero_invalid

__all__ = ["AudioCNNEncoder", "ConvBlock", "LogMelSpectrogram", "Resample", "hz_to_mel", "mel_to_hz", "mel_filter_bank"]
POOLS = ("avg", "max", "avg+max")


class ConvBlock(nn.Module):
    """``convs`` x (3x3 conv + BN + ReLU), then 2x2 pooling (PANNs ``ConvBlock`` has 2 convs, ``avg``).

    ``pool``: ``avg`` (PANNs), ``max`` (VGGish) or ``avg+max`` (their sum).
    """

    def __init__(self, in_ch: int, out_ch: int, convs: int = 2, pool: str = "avg") -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"conv pooling must be one of {POOLS}, got {pool!r}")
        self.pool = pool
        self.convs = nn.ModuleList(nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=False)
                                   for i in range(convs))
        self.norms = nn.ModuleList(nn.BatchNorm2d(out_ch) for _ in range(convs))

    def forward(self, x: Tensor, frame_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``x: (B, C, F_time, n_mels)``; padded frames are re-zeroed after each layer."""
        frames = None if frame_mask is None else frame_mask[:, None]  # (B, 1, F): every channel
        for conv, norm in zip(self.convs, self.norms):
            x = zero_invalid(F.relu(norm(conv(x))), frames)
        if self.pool == "avg":
            x = F.avg_pool2d(x, 2)
        elif self.pool == "max":
            x = F.max_pool2d(x, 2)
        else:
            x = F.avg_pool2d(x, 2) + F.max_pool2d(x, 2)
        if frame_mask is not None:
            frames = x.shape[2]
            frame_mask = F.max_pool1d(frame_mask[:, None].float(), 2)[:, 0, :frames].bool()
        return x, frame_mask


class AudioCNNEncoder(Encoder):
    """Log-mel + CNN over waveforms ``(B, T)``: returns time tokens ``(B, F', D)`` with a frame mask.

    Padded samples are zeroed before resampling and the STFT and padded frames re-zeroed after every
    conv layer, so changing padded audio changes nothing. ``output="pooled"`` gives the masked mean
    over frames.

    Args:
        sample_rate, n_fft, hop_length, n_mels, f_min, f_max: front end (the CNN's own rate).
        channels: widths of the conv blocks (PANNs CNN10 uses ``(64, 128, 256, 512)``).
        convs_per_block: 3x3 convs per block (PANNs: 2).
        input_sample_rate: rate of the waveforms given to the encoder; resampled to
            ``sample_rate`` first when different (``None`` = already at ``sample_rate``).
        conv_pool: 2x2 pooling in each block, ``avg`` (PANNs), ``max`` (VGGish) or ``avg+max``.
        output, proj_dim, freeze: as for every encoder.
    """

    def __init__(self, sample_rate: int = 8000, n_fft: int = 256, hop_length: int = 80, n_mels: int = 40,
                 channels: tuple[int, ...] | list[int] = (16, 32, 64), convs_per_block: int = 2,
                 output: Output = "tokens", proj_dim: int | None = None, freeze: int | bool = False,
                 input_sample_rate: int | None = None, f_min: float = 20.0, f_max: float | None = None,
                 conv_pool: str = "avg") -> None:
        channels = list(channels)
        super().__init__(channels[-1], output, proj_dim, has_cls=False)
        resample = input_sample_rate is not None and input_sample_rate != sample_rate
        self.resample = Resample(input_sample_rate, sample_rate) if resample else None
        self.frontend = LogMelSpectrogram(sample_rate, n_fft, hop_length, n_mels, f_min, f_max)
        self.bn0 = nn.BatchNorm2d(n_mels)
        self.blocks = nn.ModuleList(ConvBlock(c_in, c_out, convs_per_block, conv_pool)
                                    for c_in, c_out in zip([1] + channels[:-1], channels))
        self.fc = nn.Linear(channels[-1], channels[-1])
        self.freeze(freeze)

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``values: (B, T)`` waveforms + mask ``(B, T)`` -> ``(tokens (B, F', C), frame mask (B, F'))``."""
        if values.dim() != 2:
            raise ValueError(f"AudioCNNEncoder expects waveforms (B, T), got {tuple(values.shape)}")
        if self.resample is not None:
            values, mask = self.resample(values, mask)
        log_mel, frame_mask = self.frontend(values, mask)            # (B, M, F)
        x = self.bn0(log_mel.unsqueeze(-1))                          # normalise per mel bin
        x = x.squeeze(-1).transpose(1, 2).unsqueeze(1)               # (B, 1, F, M)
        x = zero_invalid(x, None if frame_mask is None else frame_mask[:, None])
        for block in self.blocks:
            x, frame_mask = block(x, frame_mask)
        tokens = F.relu(self.fc(x.mean(dim=3).transpose(1, 2)))      # (B, F', C)
        tokens = zero_invalid(tokens, frame_mask)
        return tokens, frame_mask

    def stem_modules(self) -> list[nn.Module]:
        return [self.bn0]

    def blocks_for_freezing(self) -> list[nn.Module]:
        return list(self.blocks)

    @staticmethod
    def num_tokens(num_samples: int, hop_length: int, num_blocks: int) -> int:
        frames = num_samples // hop_length + 1
        return math.floor(frames / 2 ** num_blocks)

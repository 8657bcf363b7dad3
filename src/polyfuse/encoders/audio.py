"""Audio: a log-mel front end (torch.stft + mel filter bank) and a PANNs-style CNN encoder.

The CNN follows the CNN6/CNN10 design of PANNs (Kong et al., 2020): blocks of 3x3 conv + BN + ReLU
with 2x2 average pooling, frequency averaged at the end, leaving a sequence of time tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.encoders.base import Encoder, Output, masked_zero


def hz_to_mel(freq: Tensor | float) -> Tensor:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(freq, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filter_bank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                    f_max: float | None = None) -> Tensor:
    """Triangular HTK mel filters ``(n_fft // 2 + 1, n_mels)`` (each peak 1, like torchaudio's default)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_points = torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    hz_points = mel_to_hz(mel_points)
    lower, centre, upper = hz_points[:-2], hz_points[1:-1], hz_points[2:]
    rising = (freqs[:, None] - lower[None]) / (centre - lower)[None]
    falling = (upper[None] - freqs[:, None]) / (upper - centre)[None]
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class LogMelSpectrogram(nn.Module):
    """Waveform ``(B, T)`` + sample mask ``(B, T)`` -> log-mel ``(B, n_mels, F)`` + frame mask ``(B, F)``.

    Padded samples are zeroed before the STFT; a frame is real when its centre lies inside the clip.
    """

    def __init__(self, sample_rate: int = 8000, n_fft: int = 256, hop_length: int = 80,
                 n_mels: int = 40, f_min: float = 20.0, f_max: float | None = None, eps: float = 1e-6) -> None:
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length, self.eps = sample_rate, n_fft, hop_length, eps
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("mel_fb", mel_filter_bank(n_fft, n_mels, sample_rate, f_min, f_max), persistent=False)

    def frame_mask(self, sample_mask: Tensor, num_frames: int) -> Tensor:
        lengths = sample_mask.sum(-1)
        frames = torch.arange(num_frames, device=sample_mask.device)
        return frames[None] * self.hop_length < lengths[:, None]

    def forward(self, waveform: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        waveform = masked_zero(waveform.float(), mask)
        spec = torch.stft(waveform, self.n_fft, self.hop_length, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2  # (B, n_fft // 2 + 1, F)
        mel = torch.matmul(power.transpose(1, 2), self.mel_fb).transpose(1, 2)
        log_mel = torch.log(mel + self.eps)
        frame_mask = None if mask is None else self.frame_mask(mask, log_mel.shape[-1])
        return log_mel, frame_mask


class ConvBlock(nn.Module):
    """``convs`` x (3x3 conv + BN + ReLU), then 2x2 average pooling (PANNs ``ConvBlock`` has 2 convs)."""

    def __init__(self, in_ch: int, out_ch: int, convs: int = 2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=False)
                                   for i in range(convs))
        self.norms = nn.ModuleList(nn.BatchNorm2d(out_ch) for _ in range(convs))

    def forward(self, x: Tensor, frame_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``x: (B, C, F_time, n_mels)``; padded frames are re-zeroed after each layer."""
        keep = None if frame_mask is None else frame_mask[:, None, :, None].to(x.dtype)
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
            x = x if keep is None else x * keep
        x = F.avg_pool2d(x, 2)
        if frame_mask is not None:
            frames = x.shape[2]
            frame_mask = F.max_pool1d(frame_mask[:, None].float(), 2)[:, 0, :frames].bool()
        return x, frame_mask


class AudioCNNEncoder(Encoder):
    """Log-mel + CNN over waveforms ``(B, T)``: returns time tokens ``(B, F', D)`` with a frame mask.

    Padded samples are zeroed before the STFT and padded frames re-zeroed after every conv layer, so
    changing padded audio changes nothing. ``output="pooled"`` gives the masked mean over frames.

    Args:
        sample_rate, n_fft, hop_length, n_mels: front end. channels: widths of the conv blocks
            (PANNs CNN6 uses ``(64, 128, 256, 512)``). convs_per_block: 3x3 convs per block (PANNs: 2).
        proj_dim: optional projection.
    """

    def __init__(self, sample_rate: int = 8000, n_fft: int = 256, hop_length: int = 80, n_mels: int = 40,
                 channels: tuple[int, ...] | list[int] = (16, 32, 64), convs_per_block: int = 2, output: Output = "tokens",
                 proj_dim: int | None = None, freeze: int | bool = False) -> None:
        channels = list(channels)
        super().__init__(channels[-1], output, proj_dim, has_cls=False)
        self.frontend = LogMelSpectrogram(sample_rate, n_fft, hop_length, n_mels)
        self.bn0 = nn.BatchNorm2d(n_mels)
        self.blocks = nn.ModuleList(ConvBlock(c_in, c_out, convs_per_block) for c_in, c_out in zip([1] + channels[:-1], channels))
        self.fc = nn.Linear(channels[-1], channels[-1])
        self.freeze(freeze)

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if values.dim() != 2:
            raise ValueError(f"AudioCNNEncoder expects waveforms (B, T), got {tuple(values.shape)}")
        log_mel, frame_mask = self.frontend(values, mask)            # (B, M, F)
        x = self.bn0(log_mel.unsqueeze(-1))                          # normalise per mel bin
        x = x.squeeze(-1).transpose(1, 2).unsqueeze(1)               # (B, 1, F, M)
        if frame_mask is not None:
            x = x * frame_mask[:, None, :, None].to(x.dtype)
        for block in self.blocks:
            x, frame_mask = block(x, frame_mask)
        tokens = F.relu(self.fc(x.mean(dim=3).transpose(1, 2)))      # (B, F', C)
        tokens = masked_zero(tokens, frame_mask)
        return tokens, frame_mask

    def stem_modules(self) -> list[nn.Module]:
        return [self.bn0]

    def blocks_for_freezing(self) -> list[nn.Module]:
        return list(self.blocks)

    @staticmethod
    def num_tokens(num_samples: int, hop_length: int, num_blocks: int) -> int:
        frames = num_samples // hop_length + 1
        return math.floor(frames / 2 ** num_blocks)

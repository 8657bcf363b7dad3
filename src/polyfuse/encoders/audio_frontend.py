"""Audio front end: resampling, log-mel spectrogram, and the frame padding mask of variable-length clips."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.masking import zero_invalid


class Resample(nn.Module):
    """Band-limited (windowed-sinc) resampling ``orig_rate -> new_rate`` of waveforms ``(B, T)``.

    The polyphase sinc interpolation of torchaudio's ``functional.resample`` (Hann window,
    ``lowpass_filter_width`` zero crossings, cutoff ``rolloff`` x the lower Nyquist rate). Padded
    samples are zeroed first, so the output of a padded clip equals that of the clip alone; the
    mask becomes ``ceil(length * new / orig)`` samples.
    """

    def __init__(self, orig_rate: int, new_rate: int, lowpass_filter_width: int = 6, rolloff: float = 0.99) -> None:
        super().__init__()
        gcd = math.gcd(int(orig_rate), int(new_rate))
        self.orig, self.new = int(orig_rate) // gcd, int(new_rate) // gcd
        base = min(self.orig, self.new) * rolloff
        self.width = math.ceil(lowpass_filter_width * self.orig / base)
        index = torch.arange(-self.width, self.width + self.orig, dtype=torch.float64) / self.orig
        t = (torch.arange(0, -self.new, -1, dtype=torch.float64)[:, None] / self.new + index[None]) * base
        t = t.clamp(-lowpass_filter_width, lowpass_filter_width)
        window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
        t = t * math.pi
        sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
        self.register_buffer("kernel", (sinc * window * base / self.orig).float()[:, None], persistent=False)

    def output_length(self, length: Tensor | int) -> Tensor | int:
        """Samples after resampling a clip of ``length`` samples."""
        if isinstance(length, Tensor):
            return torch.div(length * self.new + self.orig - 1, self.orig, rounding_mode="floor")
        return -(-length * self.new // self.orig)

    def forward(self, waveform: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``(B, T)`` + mask ``(B, T)`` -> ``(B, T')`` + mask ``(B, T')``."""
        if self.orig == self.new:
            return waveform, mask
        waveform = zero_invalid(waveform.float(), mask)
        batch, length = waveform.shape
        padded = F.pad(waveform[:, None], (self.width, self.width + self.orig))
        out = F.conv1d(padded, self.kernel, stride=self.orig)          # (B, new, frames)
        out = out.transpose(1, 2).reshape(batch, -1)[:, : self.output_length(length)]
        if mask is None:
            return out, None
        lengths = self.output_length(mask.sum(-1))
        new_mask = torch.arange(out.shape[1], device=out.device)[None] < lengths[:, None]
        return zero_invalid(out, new_mask), new_mask


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
        waveform = zero_invalid(waveform.float(), mask)
        spec = torch.stft(waveform, self.n_fft, self.hop_length, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2  # (B, n_fft // 2 + 1, F)
        mel = torch.matmul(power.transpose(1, 2), self.mel_fb).transpose(1, 2)
        log_mel = torch.log(mel + self.eps)
        frame_mask = None if mask is None else self.frame_mask(mask, log_mel.shape[-1])
        return log_mel, frame_mask



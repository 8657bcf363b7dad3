"""Audio front end and CNN: log-mel parity with transformers' reference, resampling, padding invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polyfuse.batch import ModalityInput
from polyfuse.encoders import AudioCNNEncoder, LogMelSpectrogram, Resample, mel_filter_bank

from .parity_helpers import max_diff


def test_mel_filter_bank_matches_transformers():
    audio_utils = pytest.importorskip("transformers.audio_utils")
    expected = audio_utils.mel_filter_bank(num_frequency_bins=129, num_mel_filters=40, min_frequency=20.0,
                                           max_frequency=4000.0, sampling_rate=8000, norm=None, mel_scale="htk")
    assert max_diff(mel_filter_bank(256, 40, 8000, 20.0, 4000.0), torch.from_numpy(expected).float()) <= 1e-6


def test_log_mel_matches_transformers_spectrogram():
    audio_utils = pytest.importorskip("transformers.audio_utils")
    torch.manual_seed(0)
    wave = torch.randn(1, 4000)
    frontend = LogMelSpectrogram(sample_rate=8000, n_fft=256, hop_length=80, n_mels=40)
    ours, _ = frontend(wave)
    mel = audio_utils.spectrogram(wave[0].double().numpy(), audio_utils.window_function(256, "hann"),
                                  frame_length=256, hop_length=80, power=2.0, center=True, pad_mode="constant",
                                  mel_filters=frontend.mel_fb.double().numpy(), mel_floor=1e-30, dtype=np.float64)
    expected = torch.from_numpy(np.log(mel + frontend.eps)).float()
    assert ours.shape[1:] == expected.shape
    assert max_diff(ours[0], expected) <= 1e-4  # log of fp32 power: relative 1e-6 around values ~ 10


def test_resample_preserves_a_tone():
    rate_in, rate_out, freq = 16000, 8000, 440.0
    t_in = torch.arange(rate_in // 2) / rate_in
    wave = torch.sin(2 * math.pi * freq * t_in)[None]
    out, _ = Resample(rate_in, rate_out)(wave)
    assert out.shape[1] == rate_out // 2
    t_out = torch.arange(out.shape[1]) / rate_out
    inner = slice(100, -100)  # away from the clip edges, where the sinc filter sees zeros
    assert max_diff(out[0, inner], torch.sin(2 * math.pi * freq * t_out)[inner]) <= 2e-3
    up, _ = Resample(8000, 22050)(out)
    assert up.shape[1] == math.ceil(out.shape[1] * 22050 / 8000)


def test_resample_padding_changes_nothing():
    resample = Resample(16000, 8000)
    torch.manual_seed(0)
    clip = torch.randn(1, 3001)
    padded = torch.cat([clip, torch.randn(1, 999)], dim=1)
    mask = torch.arange(4000)[None] < 3001
    out, out_mask = resample(padded, mask)
    alone, _ = resample(clip)
    assert int(out_mask.sum()) == alone.shape[1] == 1501
    assert max_diff(out[:, :1501], alone) <= 1e-6 and out[:, 1501:].abs().max() == 0


@pytest.mark.parametrize("conv_pool", ["avg", "max", "avg+max"])
def test_encoder_padding_invariance_and_gradients(conv_pool):
    torch.manual_seed(0)
    encoder = AudioCNNEncoder(sample_rate=8000, channels=[8, 16], input_sample_rate=16000, conv_pool=conv_pool,
                              output="tokens", proj_dim=12).eval()
    lengths = torch.tensor([16000, 9000])
    mask = torch.arange(16000)[None] < lengths[:, None]
    wave = torch.randn(2, 16000)
    noisy = torch.where(mask, wave, torch.randn(2, 16000) * 10)
    with torch.no_grad():
        a, b = encoder(ModalityInput(wave, mask)), encoder(ModalityInput(noisy, mask))
    assert torch.equal(a.mask, b.mask) and a.mask[1].sum() < a.mask[0].sum()
    assert max_diff(a.tokens, b.tokens) <= 1e-6

    encoder.train()
    encoder(ModalityInput(wave, mask)).tokens.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_cnn10_sizing_and_pooled_output():
    encoder = AudioCNNEncoder(channels=[64, 128, 256, 512], output="pooled")
    assert encoder.out_dim == 512 and len(encoder.blocks) == 4
    out = encoder(torch.randn(2, 8000))
    assert out.tokens.shape == (2, 1, 512) and out.mask is None

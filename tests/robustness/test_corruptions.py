"""Corruptions: identity at severity 0, monotone in severity, masks and absent samples respected."""

from __future__ import annotations

import math

import pytest
import torch

from polyfuse.batch import ModalityInput
from polyfuse.robustness import CORRUPTIONS, corrupt, corruptions_for


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images() -> ModalityInput:
    torch.manual_seed(0)
    return ModalityInput(torch.rand(4, 1, 32, 32) * 2 - 1, present=torch.tensor([True, True, False, True]))


def _audio() -> ModalityInput:
    t = torch.arange(800) / 8000
    wave = torch.sin(2 * math.pi * 440 * t).repeat(3, 1)
    mask = torch.ones(3, 800, dtype=torch.bool)
    mask[1, 600:] = False
    wave[1, 600:] = 0.0
    return ModalityInput(wave, mask=mask)


def _text() -> ModalityInput:
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 3, 0, 0], [2, 20, 21, 3, 0, 0, 0, 0, 0]])
    return ModalityInput(ids, mask=ids != 0)


def _video() -> ModalityInput:
    torch.manual_seed(0)
    return ModalityInput(torch.rand(2, 6, 1, 4, 4), mask=torch.tensor([[True] * 6, [True] * 4 + [False] * 2]))


def test_every_corruption_is_registered_for_its_modality():
    assert set(corruptions_for("image")) == {"gaussian_noise", "blur", "occlusion"}
    assert corruptions_for("audio") == ["noise_snr"]
    assert set(corruptions_for("text")) == {"token_dropout", "token_shuffle"}
    with pytest.raises(KeyError, match="available"):
        corrupt("fog", _images(), 0.5, _gen())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt("blur", _images(), 1.5, _gen())


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_severity_zero_is_the_identity_and_shapes_and_presence_are_kept(name):
    inputs = {"image": _images, "audio": _audio, "text": _text, "video": _video}[CORRUPTIONS[name][0]]()
    assert corrupt(name, inputs, 0.0, _gen()) is inputs
    out = corrupt(name, inputs, 0.7, _gen())
    assert out.values.shape == inputs.values.shape and out.values.dtype == inputs.values.dtype
    assert out.present is inputs.present
    again = corrupt(name, inputs, 0.7, _gen())
    assert torch.equal(out.values, again.values)  # the generator is the only source of randomness


@pytest.mark.parametrize("name", ["gaussian_noise", "blur", "occlusion"])
def test_image_corruptions_grow_with_severity(name):
    images = _images()
    distances = [float((corrupt(name, images, s, _gen()).values - images.values).abs().mean()) for s in (0.2, 0.5, 1.0)]
    assert distances[0] < distances[1] < distances[2]


def test_occlusion_covers_the_requested_area():
    images = _images()
    out = corrupt("occlusion", images, 0.25, _gen())
    changed = (out.values != images.values).flatten(1).float().mean(1)
    assert torch.allclose(changed, torch.full_like(changed, 0.25), atol=0.02)


@pytest.mark.parametrize("severity,snr_db", [(0.25, 20.0), (0.75, 0.0), (1.0, -10.0)])
def test_audio_noise_reaches_the_target_snr_and_leaves_padding_alone(severity, snr_db):
    audio = _audio()
    out = corrupt("noise_snr", audio, severity, _gen())
    noise = (out.values - audio.values)[audio.mask]
    signal = audio.values[audio.mask]
    measured = 10 * math.log10(float(signal.pow(2).mean() / noise.pow(2).mean()))
    assert measured == pytest.approx(snr_db, abs=0.5)
    assert torch.equal(out.values[1, 600:], torch.zeros(200))


def test_token_dropout_removes_inner_tokens_and_compacts():
    text = _text()
    out = corrupt("token_dropout", text, 1.0, _gen())
    assert out.values[0, :2].tolist() == [2, 3] and out.mask[0].tolist() == [True, True] + [False] * 7
    partial = corrupt("token_dropout", text, 0.5, _gen(3))
    for row, mask in zip(partial.values, partial.mask):
        assert mask.tolist() == sorted(mask.tolist(), reverse=True)  # a prefix: no holes
        kept = row[mask].tolist()
        assert kept[0] == 2 and kept[-1] == 3


def test_token_shuffle_permutes_inner_tokens_only():
    text = _text()
    out = corrupt("token_shuffle", text, 1.0, _gen())
    assert torch.equal(out.mask, text.mask)
    for before, after, mask in zip(text.values, out.values, text.mask):
        assert after[0] == before[0] and after[mask].tolist()[-1] == before[mask].tolist()[-1]
        assert sorted(after[mask].tolist()) == sorted(before[mask].tolist())
    assert not torch.equal(out.values[0], text.values[0])

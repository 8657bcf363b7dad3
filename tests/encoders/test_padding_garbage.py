"""Garbage (NaN, inf, out-of-vocabulary ids) in padded positions and absent rows never leaks.

The encoder-side twin of the fusion contract test (``tests/fusion/test_fusion_contract.py``): every
encoder configured in ``configs/model/encoder/`` that needs no downloaded file, as tokens and as
pooled output, gets the same batch twice, once with clean padding and once with garbage planted

* in its input (padded samples / token ids, and every value of an absent row), and
* in its output path (the tokens ``encode`` returns, at padded positions and absent rows, before
  pooling, projection and the absent-row zeroing of :class:`~polyfuse.encoders.base.Encoder`);

the valid positions, the pooled output and ``Encoded.pooled()`` must be finite and identical, and
absent rows exact zeros.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from polyfuse.batch import Encoded, ModalityInput
from polyfuse.encoders import (AudioCNNEncoder, CLIPTextEncoder, Encoder, FrameTemporalEncoder, TextTransformerEncoder,
                               VideoViTEncoder)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model" / "encoder"
NEEDS_FILES = {"minilm_l6", "mobilenet_v2", "open_clip_text", "open_clip_vit"}  # pretrained weights
NAMES = sorted(path.stem for path in CONFIGS.glob("*.yaml") if path.stem not in NEEDS_FILES)
BATCH, TEXT_LENGTH, AUDIO_SAMPLES, FRAMES = 3, 8, 4000, 4
PRESENT = torch.tensor([True, True, False])          # row 2: the modality is absent


def test_every_file_free_encoder_config_is_covered():
    assert {"audio_cnn", "audio_cnn10", "bert_tiny", "clip_text_tiny", "clip_vit_tiny", "minilm_l6_scratch",
            "mobilenet_v2_scratch", "vit_tiny"} <= set(NAMES)


def build(name: str, output: str) -> Encoder:
    torch.manual_seed(0)
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    cfg.output = output
    return hydra.utils.instantiate(cfg)


def clean_inputs(encoder: Encoder) -> ModalityInput:
    """Row 0 full, row 1 padded (sequences), row 2 absent; padding and the absent row hold zeros."""
    generator = torch.Generator().manual_seed(1)
    if isinstance(encoder, (TextTransformerEncoder, CLIPTextEncoder)):
        word_table = encoder.token_embedding if isinstance(encoder, CLIPTextEncoder) else encoder.embeddings.word_embeddings
        vocab = word_table.num_embeddings
        ids = torch.randint(1, vocab, (BATCH, TEXT_LENGTH), generator=generator)
        lengths = torch.tensor([TEXT_LENGTH, 5, TEXT_LENGTH])
        values, mask = ids, torch.arange(TEXT_LENGTH)[None] < lengths[:, None]
    elif isinstance(encoder, AudioCNNEncoder):
        values = torch.randn(BATCH, AUDIO_SAMPLES, generator=generator)
        lengths = torch.tensor([AUDIO_SAMPLES, 2600, AUDIO_SAMPLES])
        mask = torch.arange(AUDIO_SAMPLES)[None] < lengths[:, None]
    elif isinstance(encoder, (FrameTemporalEncoder, VideoViTEncoder)):  # clips: padded frames
        frame = encoder.frame_encoder if isinstance(encoder, FrameTemporalEncoder) else encoder
        values = torch.randn(BATCH, FRAMES, frame.in_chans, frame.image_size, frame.image_size, generator=generator)
        mask = torch.arange(FRAMES)[None] < torch.tensor([FRAMES, 2, FRAMES])[:, None]
    else:  # images: no padding
        size = getattr(encoder, "image_size", 32)
        values, mask = torch.randn(BATCH, encoder.in_chans, size, size, generator=generator), None
    valid = PRESENT[:, None] if mask is None else mask & PRESENT[:, None]
    values = torch.where(valid.reshape(*valid.shape, *[1] * (values.dim() - valid.dim())), values,
                         torch.zeros((), dtype=values.dtype))
    return ModalityInput(values, mask, PRESENT.clone())


def plant(values: torch.Tensor, invalid: torch.Tensor) -> torch.Tensor:
    """``values`` with NaN / +inf / -inf (floats) or out-of-vocabulary ids (ints) where ``invalid``."""
    if values.is_floating_point():
        cycle = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=values.dtype)
        garbage = cycle[torch.arange(values.numel()) % 3].reshape(values.shape)
    else:
        garbage = torch.full_like(values, 10 ** 6)
    invalid = invalid.reshape(*invalid.shape, *[1] * (values.dim() - invalid.dim()))
    return torch.where(invalid, garbage, values)


def garbage_inputs(inputs: ModalityInput) -> ModalityInput:
    valid = inputs.present[:, None] if inputs.mask is None else inputs.mask & inputs.present[:, None]
    return ModalityInput(plant(inputs.values, ~valid), inputs.mask, inputs.present)


def run(encoder: Encoder, inputs: ModalityInput, train: bool) -> Encoded:
    encoder.train(train)
    torch.manual_seed(2)   # same dropout draws for both runs
    with torch.no_grad():
        return encoder(inputs)


def assert_no_leak(clean: Encoded, dirty: Encoded) -> None:
    valid = clean.valid_mask()
    assert torch.equal(dirty.valid_mask(), valid)
    kept_clean, kept_dirty = clean.tokens[valid], dirty.tokens[valid]
    assert torch.isfinite(kept_dirty).all(), "garbage reached a valid position"
    assert torch.equal(kept_dirty, kept_clean)
    assert torch.isfinite(dirty.pooled()).all() and torch.equal(dirty.pooled(), clean.pooled())
    absent = ~clean.present_or_full()
    assert torch.equal(dirty.tokens[absent], torch.zeros_like(dirty.tokens[absent])), "absent rows must be zeros"


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("output", ["tokens", "pooled"])
@pytest.mark.parametrize("name", NAMES)
def test_garbage_in_the_input_changes_nothing(name, output, train):
    encoder = build(name, output)
    inputs = clean_inputs(encoder)
    assert_no_leak(run(encoder, inputs, train), run(encoder, garbage_inputs(inputs), train))


@pytest.mark.parametrize("output", ["tokens", "pooled"])
@pytest.mark.parametrize("name", NAMES)
def test_garbage_in_the_encoded_tokens_changes_nothing(name, output, monkeypatch):
    """Garbage that ``encode`` leaves at padded positions / absent rows is masked by pooling and
    the base's absent-row rule (an encoder's own output hygiene is not relied on)."""
    encoder = build(name, output)
    inputs = clean_inputs(encoder)
    clean = run(encoder, inputs, False)
    encode = encoder.encode

    def dirty_encode(values: torch.Tensor, mask: torch.Tensor | None):
        tokens, token_mask = encode(values, mask)
        valid = torch.ones(tokens.shape[:2], dtype=torch.bool) if token_mask is None else token_mask
        return plant(tokens, ~(valid & PRESENT[:, None])), token_mask

    monkeypatch.setattr(encoder, "encode", dirty_encode)
    dirty = run(encoder, inputs, False)
    if output == "pooled" and encoder.pool == "cls":   # the [CLS] token is a valid position
        assert torch.equal(dirty.tokens[PRESENT], clean.tokens[PRESENT])
    assert_no_leak(clean, dirty)


def test_encoded_pooled_ignores_garbage():
    tokens = torch.randn(3, 4, 5)
    mask = torch.tensor([[True, True, False, False], [True] * 4, [True, False, False, False]])
    present = torch.tensor([True, True, False])
    clean = Encoded(torch.where((mask & present[:, None])[..., None], tokens, 0.0), mask, present)
    dirty = Encoded(plant(tokens, ~(mask & present[:, None])), mask, present)
    expected = torch.stack([tokens[0, :2].mean(0), tokens[1].mean(0), torch.zeros(5)])
    torch.testing.assert_close(dirty.pooled(), expected)
    assert torch.equal(dirty.pooled(), clean.pooled())

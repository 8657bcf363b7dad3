"""Packed (varlen) execution of the token-level fusions equals the padded path (docs/packing.md)."""

from __future__ import annotations

import pytest
import torch

from polyfuse.batch import Encoded
from polyfuse.fusion.packed import gather_valid, interleave

from .fusion_cases import PRESENCE, make_fusion, make_inputs

PACKED = ["early", "cross_attention", "co_attention", "hybrid"]
TOL = dict(atol=1e-5, rtol=1e-5)


def pair(name: str, **options) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same weights, padded and packed."""
    padded = make_fusion(name, **options)
    packed = make_fusion(name, packing=True, **options)
    packed.load_state_dict(padded.state_dict())
    return padded, packed


def loss(output) -> torch.Tensor:
    return output.pooled.pow(2).mean() + output.tokens.sin().mean()


def assert_same_outputs_and_gradients(padded, packed, inputs) -> None:
    expected, actual = padded(inputs), packed(inputs)
    torch.testing.assert_close(actual.pooled, expected.pooled, **TOL)
    torch.testing.assert_close(actual.tokens, expected.tokens, **TOL)
    assert torch.equal(actual.mask, expected.mask)
    assert torch.equal(actual.tokens[~actual.mask], torch.zeros_like(actual.tokens[~actual.mask]))
    loss(expected).backward()
    loss(actual).backward()
    for (name, a), (_, b) in zip(padded.named_parameters(), packed.named_parameters()):
        grad_a = torch.zeros_like(a) if a.grad is None else a.grad
        grad_b = torch.zeros_like(b) if b.grad is None else b.grad
        torch.testing.assert_close(grad_b, grad_a, **TOL, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("name", PACKED)
@pytest.mark.parametrize("presence", ["mixed", "all"], ids=["absent-modalities", "all-present"])
def test_packed_equals_padded(name, presence):
    padded, packed = pair(name)
    padded.eval(), packed.eval()
    inputs = make_inputs(presence=None if presence == "mixed" else torch.ones_like(PRESENCE))
    assert_same_outputs_and_gradients(padded, packed, inputs)


@pytest.mark.parametrize("absent, falls_back", [([(1, 1), (4, 1)], False), ([(2, 0)], True)],
                         ids=["absent-image", "absent-text-falls-back"])
def test_vilt_layout_packed_equals_padded(absent, falls_back):
    """EarlyFusion in ViLT's layout: no [CLS], no [MISS]; the first modality's first token is pooled.
    When that token is padding (an absent text) the padded path pools a masked query: packing falls back."""
    options = dict(dims={"text": 16, "image": 16}, width=16, project=False, class_token=False,
                   missing_tokens=False, token_projection=False)
    padded, packed = pair("early", **options)
    padded.eval(), packed.eval()
    presence = torch.ones(8, 2, dtype=torch.bool)
    for sample, modality in absent:
        presence[sample, modality] = False
    inputs = make_inputs(presence=presence, dims={"text": 16, "image": 16})
    if falls_back:
        packed.fuse_packed = None  # the fallback must not reach the packed path
    assert_same_outputs_and_gradients(padded, packed, inputs)


@pytest.mark.parametrize("name", PACKED)
def test_nan_in_padding_and_absent_samples_never_reaches_outputs(name):
    padded, packed = pair(name)
    packed.eval()
    clean = make_inputs()
    dirty = {}
    for modality, encoded in clean.items():
        invalid = ~(encoded.mask & encoded.present[:, None])
        dirty[modality] = Encoded(encoded.tokens.masked_fill(invalid[..., None], float("nan")), encoded.mask,
                                  encoded.present)
    expected, actual = packed(clean), packed(dirty)
    assert torch.isfinite(actual.pooled).all() and torch.isfinite(actual.tokens).all()
    torch.testing.assert_close(actual.pooled, expected.pooled, atol=0, rtol=0)
    torch.testing.assert_close(actual.tokens, expected.tokens, atol=0, rtol=0)


@pytest.mark.parametrize("name", PACKED)
def test_mask_with_holes_gives_the_padded_result(name):
    """Packed fusions gather tokens by the mask itself and scatter them back, so any mask works."""
    padded, packed = pair(name)
    padded.eval(), packed.eval()
    inputs = make_inputs()
    image = inputs["image"]
    holes = image.mask.clone()
    holes[0, 1] = holes[5, 0] = False  # real tokens after a gap
    inputs["image"] = Encoded(image.tokens, holes, image.present)
    assert_same_outputs_and_gradients(padded, packed, inputs)


@pytest.mark.parametrize("name", PACKED)
def test_attention_maps_run_the_padded_path(name):
    padded, packed = pair(name)
    padded.eval(), packed.eval()
    inputs = make_inputs()
    expected, actual = padded(inputs, return_attention=True), packed(inputs, return_attention=True)
    assert actual.attentions and set(actual.attentions) == set(expected.attentions)
    torch.testing.assert_close(actual.pooled, expected.pooled, atol=0, rtol=0)


@pytest.mark.parametrize("name", PACKED)
def test_training_mode_without_dropout_matches(name):
    padded, packed = pair(name, dropout=0.0)
    assert_same_outputs_and_gradients(padded.train(), packed.train(), make_inputs(seed=4))


def test_gather_valid_and_interleave_place_rows_sample_by_sample():
    tokens = torch.arange(2 * 3, dtype=torch.float32).view(2, 3, 1)
    mask = torch.tensor([[True, False, True], [False, True, False]])
    packed = gather_valid(tokens, mask)
    assert packed.rows.squeeze(1).tolist() == [0.0, 2.0, 4.0]
    assert packed.packing.cu_seqlens.tolist() == [0, 2, 3] and packed.columns().tolist() == [0, 2, 1]
    assert torch.equal(packed.scatter(packed.rows), torch.where(mask[..., None], tokens, 0.0))
    other = torch.tensor([[10.0], [11.0], [12.0]])
    joint, destination, lengths = interleave([(packed.rows, packed.lengths()),
                                              (other, torch.tensor([1, 2]))], batch=2)
    assert joint.squeeze(1).tolist() == [0.0, 2.0, 10.0, 4.0, 11.0, 12.0]
    assert lengths.tolist() == [3, 3] and destination.tolist() == [0, 1, 3, 2, 4, 5]


@pytest.mark.parametrize("name", PACKED)
def test_batch_without_padding_runs_the_padded_path(name):
    """Nothing to skip: no gather/scatter cost (the 0%-padding case is never slower)."""
    padded, packed = pair(name)
    padded.eval(), packed.eval()
    generator = torch.Generator().manual_seed(2)
    inputs = {m: torch.randn(4, 3, d, generator=generator) for m, d in {"image": 12, "audio": 8, "text": 10}.items()}
    packed.fuse_packed = None  # must not be reached
    torch.testing.assert_close(packed(inputs).pooled, padded(inputs).pooled, atol=0, rtol=0)

"""The shared missing-modality helpers and the input sanitisation of Fusion.prepare."""

from __future__ import annotations

import pytest
import torch

from polyfuse.batch import Encoded
from polyfuse.fusion import ConcatFusion
from polyfuse.fusion.masking import masked_mean, present_mean, substitute_missing_token


def test_masked_mean_ignores_masked_nan_and_gives_zero_without_valid():
    tokens = torch.tensor([[[1.0], [3.0], [float("nan")]], [[float("nan")], [2.0], [2.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    torch.testing.assert_close(masked_mean(tokens, mask), torch.tensor([[2.0], [0.0]]))


def test_present_mean_renormalises_over_present():
    stacked = torch.tensor([[[1.0], [float("nan")], [5.0]], [[1.0], [2.0], [3.0]], [[1.0], [2.0], [3.0]]])
    present = torch.tensor([[True, False, True], [True, True, True], [False, False, False]])
    torch.testing.assert_close(present_mean(stacked, present), torch.tensor([[3.0], [2.0], [0.0]]))
    logits = torch.tensor([0.0, 0.0, torch.log(torch.tensor(3.0))])
    torch.testing.assert_close(present_mean(stacked, present, logits)[0], torch.tensor([4.0]))


def test_substitute_missing_token():
    tokens, mask = torch.zeros(2, 3, 2), torch.tensor([[True, True, False], [False, False, False]])
    new_tokens, new_mask = substitute_missing_token(tokens, mask, torch.tensor([True, False]), torch.ones(2))
    assert torch.equal(new_mask, torch.tensor([[True, True, False], [True, False, False]]))
    assert torch.equal(new_tokens[1, 0], torch.ones(2)) and torch.equal(new_tokens[0], tokens[0])


def test_prepare_sanitises_and_orders():
    fusion = ConcatFusion({"image": 2, "text": 2}, 4)
    text = Encoded(torch.full((2, 2, 2), float("nan")), torch.tensor([[True, False], [True, True]]),
                   torch.tensor([True, False]))
    text.tokens[0, 0] = 1.0
    prepared = fusion.prepare({"text": text})
    assert list(prepared) == ["image", "text"]
    assert not prepared["image"].present.any() and not prepared["image"].mask.any()
    assert torch.equal(prepared["text"].mask, torch.tensor([[True, False], [False, False]]))
    assert torch.equal(prepared["text"].tokens, torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]))


def test_present_without_any_real_token_counts_as_absent():
    fusion = ConcatFusion({"image": 2, "text": 2}, 4)
    text = Encoded(torch.randn(2, 2, 2), torch.tensor([[True, False], [False, False]]))
    assert torch.equal(fusion.prepare({"text": text})["text"].present, torch.tensor([True, False]))


@pytest.mark.parametrize(("inputs", "error", "message"), [
    ({"video": torch.zeros(2, 3)}, KeyError, "video"),
    ({"image": torch.zeros(2, 5)}, ValueError, "width 5, expected 2"),
    ({"image": torch.zeros(2, 2), "text": torch.zeros(3, 2)}, ValueError, "batch size 3"),
    ({}, ValueError, "no modality"),
])
def test_prepare_errors_name_the_problem(inputs, error, message):
    with pytest.raises(error, match=message):
        ConcatFusion({"image": 2, "text": 2}, 4)(inputs)

"""The one masking rule (:mod:`polyfuse.masking`): invalid entries are selected away, never multiplied by zero."""

from __future__ import annotations

import pytest
import torch

from polyfuse.masking import masked_mean, zero_invalid

NAN, INF = float("nan"), float("inf")


def test_zero_invalid_gives_exact_zeros_and_zero_gradients_for_nan_and_inf():
    values = torch.tensor([[1.0, NAN], [INF, 2.0]], requires_grad=True)
    mask = torch.tensor([[True, False], [False, True]])
    out = zero_invalid(values, mask)
    assert torch.equal(out, torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    out.sum().backward()
    assert torch.equal(values.grad, mask.float())       # a multiplying mask would give nan here


def test_zero_invalid_masks_rows_positions_and_broadcasts_size_one_dimensions():
    values = torch.full((2, 3, 4), NAN)
    rows = torch.tensor([True, False])
    assert torch.isnan(zero_invalid(values, rows)[0]).all() and torch.equal(zero_invalid(values, rows)[1], torch.zeros(3, 4))
    frames = torch.tensor([[True, False, True, False]])[:, None]        # (1, 1, L): every row and channel
    out = zero_invalid(torch.ones(2, 3, 4, 5), frames)
    assert torch.equal(out[:, :, 1], torch.zeros(2, 3, 5)) and torch.equal(out[:, :, 0], torch.ones(2, 3, 5))
    assert zero_invalid(values, None) is values


def test_zero_invalid_keeps_integer_dtypes():
    ids = torch.tensor([[5, 10 ** 6]])
    out = zero_invalid(ids, torch.tensor([[True, False]]))
    assert out.dtype == ids.dtype and out.tolist() == [[5, 0]]


def test_zero_invalid_names_mismatched_shapes():
    with pytest.raises(ValueError, match=r"mask \(3,\) does not match .*\(2, 4\)"):
        zero_invalid(torch.zeros(2, 4), torch.ones(3, dtype=torch.bool))


def test_masked_mean_ignores_garbage_and_gives_zeros_without_a_valid_position():
    tokens = torch.randn(3, 4, 2)
    mask = torch.tensor([[True, True, False, False], [True] * 4, [False] * 4])
    dirty = torch.where(mask[..., None], tokens, torch.tensor(NAN))
    expected = torch.stack([tokens[0, :2].mean(0), tokens[1].mean(0), torch.zeros(2)])
    torch.testing.assert_close(masked_mean(dirty, mask), expected)
    dirty.requires_grad_(True)
    masked_mean(dirty, mask).sum().backward()
    assert torch.isfinite(dirty.grad).all() and torch.equal(dirty.grad[~mask], torch.zeros(int((~mask).sum()), 2))


def test_masked_mean_over_unbatched_positions_and_without_mask():
    values = torch.tensor([[1.0, 3.0, INF]])
    assert masked_mean(values, torch.tensor([[True, True, False]])).tolist() == [2.0]
    torch.testing.assert_close(masked_mean(torch.ones(2, 3, 4), None), torch.ones(2, 4))

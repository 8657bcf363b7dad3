"""Mask conventions shared by every backend."""

from __future__ import annotations

import torch

from polyfuse.attention.masks import allowed_mask, causal_mask, lengths_to_padding_mask


def test_causal_mask_is_aligned_to_the_last_key():
    mask = causal_mask(2, 4, torch.device("cpu"))
    assert mask.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert causal_mask(3, 2, torch.device("cpu")).tolist() == [[False, False], [True, False], [True, True]]


def test_lengths_and_combined_mask_shapes():
    lengths = torch.tensor([3, 0])
    mask = lengths_to_padding_mask(lengths, 4)
    assert mask.tolist() == [[True, True, True, False], [False, False, False, False]]
    assert allowed_mask(mask, 5, 4, causal=False, device=torch.device("cpu")).shape == (2, 1, 1, 4)
    assert allowed_mask(mask, 5, 4, causal=True, device=torch.device("cpu")).shape == (2, 1, 5, 4)
    assert allowed_mask(None, 5, 4, causal=False, device=torch.device("cpu")) is None

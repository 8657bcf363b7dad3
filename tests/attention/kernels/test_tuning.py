"""Autotuning spaces: pruning keeps tiles that fit the sequence, and always keeps one."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")
import triton  # noqa: E402

from polyfuse.attention.kernels.tuning import length_key, prune_configs  # noqa: E402


def _configs():
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}) for m, n in [(128, 128), (128, 64), (64, 32), (32, 16)]]


def test_length_key_buckets_to_powers_of_two():
    assert [length_key(n) for n in (1, 40, 64, 77, 197, 1025)] == [1, 64, 64, 128, 256, 2048]


def test_prune_drops_tiles_wider_than_short_text():
    kept = prune_configs(_configs(), {"LQ_KEY": 256, "LK_KEY": 64}, HEAD_DIM=64)
    assert [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kept] == [(128, 64), (64, 32), (32, 16)]


def test_prune_keeps_the_smallest_when_nothing_fits():
    kept = prune_configs(_configs()[:2], {"LQ_KEY": 8, "LK_KEY": 8}, HEAD_DIM=64)
    assert [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kept] == [(128, 64)]


def test_prune_limits_tiles_for_head_dim_256():
    kept = prune_configs(_configs(), {"LQ_KEY": 4096, "LK_KEY": 4096}, HEAD_DIM=256)
    assert all(max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) <= 64 for c in kept)

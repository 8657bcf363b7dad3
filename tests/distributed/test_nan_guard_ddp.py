"""NonFiniteGuard under DDP (2 CPU processes): a NaN batch on one rank is skipped on every rank."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.slow
def test_a_nan_on_one_rank_is_skipped_by_every_rank_and_replicas_stay_identical(ranks):
    first, second = (rank["nan_guard"] for rank in ranks)
    assert first["steps"] == second["steps"] == 3                 # training went on
    assert first["skipped"] == second["skipped"] == 1             # the verdict was shared
    assert "rank 0: forward pass finite" in first["report"]             # NaN reached rank 0 only via DDP/the gather
    assert "rank 1: the input batch holds non-finite values: batch[0]" in second["report"]
    assert "first non-finite output in module 'image." in second["report"]
    for name, value in first["params"].items():
        assert bool(torch.isfinite(value).all()), name
        assert torch.equal(value, second["params"][name]), name   # no replica drifted

"""A sample-packed text tower under 2-process gloo DDP (each rank packs its own half of the batch):
every rank's contrastive loss and the all-reduced gradient of every parameter equal one process
on the global batch with the padded tower."""

from __future__ import annotations

import pytest

from ..distributed.harness import worker_results
from . import sample_packing_ddp_worker as worker

pytestmark = pytest.mark.slow  # two spawned processes


def test_ddp_sample_packing_equals_one_padded_process(tmp_path):
    ranks = worker_results(worker, tmp_path)
    model = worker.Towers(None).train()
    loss = model(*worker.global_batch())
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert len(ranks) == worker.WORLD_SIZE and len(grads) > 10
    for rank in ranks:
        assert rank["rows"] and all(width == worker.BUDGET for _, width in rank["rows"])  # it ran packed
        assert abs(rank["loss"] - float(loss)) < 1e-5  # every rank computes the global InfoNCE loss
        assert rank["grads"].keys() == grads.keys()
        for name, grad in grads.items():  # fp32, 1e-5 of the gradient's size (sums run in another order)
            assert (rank["grads"][name] - grad).abs().max() <= 1e-5 * max(1.0, float(grad.abs().max())), name


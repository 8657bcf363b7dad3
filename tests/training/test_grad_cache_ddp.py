"""Gradient caching under 2-process gloo DDP, dropout on: each rank's loss and the all-reduced gradients
equal one process on the global batch (1e-5), and DDP all-reduces once per step, not once per chunk."""

from __future__ import annotations

import pytest
import torch

from ..distributed.harness import worker_results
from . import grad_cache_ddp_worker as worker
from .grad_cache_models import chunks_of, global_inputs, graph_reference

pytestmark = pytest.mark.slow  # two spawned processes (~30 s of CPU)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return worker_results(worker, tmp_path_factory.mktemp("grad_cache_ddp"))


def _global_reference(loss_name: str):
    """One process, the global batch: rank r's chunks embedded with the generator seeded as rank r seeds it."""
    x_a, x_b = global_inputs(worker.WORLD_SIZE * worker.BATCH_PER_RANK)
    groups = []
    for rank in range(worker.WORLD_SIZE):
        rows = slice(rank * worker.BATCH_PER_RANK, (rank + 1) * worker.BATCH_PER_RANK)
        groups.append((worker.SEED + rank, chunks_of((x_a[rows], x_b[rows]), worker.CHUNK)))
    return graph_reference(worker.towers(loss_name), groups, loss_name)


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
@pytest.mark.parametrize("way", ["no_sync", "wrapped"])
def test_ddp_grad_cache_equals_one_process_on_the_global_batch(ranks, loss_name: str, way: str):
    loss, grads = _global_reference(loss_name)
    for rank in ranks:
        case = rank[f"{loss_name}/{way}"]
        if loss_name == "clip":  # every rank computes the global InfoNCE loss
            assert abs(case["loss"] - float(loss)) < 1e-5
        for name, grad in grads.items():
            torch.testing.assert_close(case["grads"][name], grad, rtol=1e-5, atol=1e-6, msg=name)
    if loss_name == "siglip":  # each rank's share: their mean is the global loss
        assert abs(sum(rank[f"siglip/{way}"]["loss"] for rank in ranks) / len(ranks) - float(loss)) < 1e-5


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
@pytest.mark.parametrize("way", ["no_sync", "wrapped"])
def test_only_the_last_chunk_all_reduces(ranks, loss_name: str, way: str):
    for rank in ranks:
        plain = rank[f"{loss_name}/plain"]["allreduce_calls"]
        assert plain >= 1 and rank[f"{loss_name}/{way}"]["allreduce_calls"] == plain


def test_lightning_ddp_grad_cache_step_equals_one_process_on_the_global_batch(tmp_path):
    """PolyfuseLitModule's training_step + backward under Lightning's DDPStrategy (the reducer armed by the
    wrapped forward): the all-reduced gradients equal one process's plain step on the global batch."""
    from . import grad_cache_lightning_worker as lightning_worker
    from .test_grad_cache_module import make_module

    ranks = worker_results(lightning_worker, tmp_path, timeout=400)
    plain = make_module(None)
    batch = lightning_worker.make_batch(0, lightning_worker.GLOBAL_BATCH)
    plain.backward(plain.training_step(batch, 0))
    assert len(ranks) == lightning_worker.WORLD_SIZE
    for rank in ranks:
        assert not rank["pending"]  # backward consumed the cached step
        for name, p in plain.named_parameters():
            torch.testing.assert_close(rank["grads"][name], p.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_fsdp_grad_cache_step_equals_one_process_on_the_global_batch(tmp_path):
    """Under FSDP2 (``FSDP2Strategy``, 2 gloo ranks) each chunk's backward reduce-scatters into the sharded
    gradients: their sum is the global batch's gradient, as the plain FSDP step's and one process's (1e-5)."""
    from . import grad_cache_fsdp_worker as fsdp_worker
    from . import grad_cache_lightning_worker as lightning_worker
    from .test_grad_cache_module import make_module

    results = worker_results(fsdp_worker, tmp_path, timeout=400)
    plain = make_module(None)
    batch = lightning_worker.make_batch(0, lightning_worker.GLOBAL_BATCH)
    loss = plain.training_step(batch, 0)
    plain.backward(loss)
    for case in ("plain", "cached"):
        assert not results[case]["pending"]
        assert abs(results[case]["loss"] - float(loss.detach())) < 1e-5, case  # InfoNCE over the gathered global batch
        for name, p in plain.named_parameters():                        # FSDP holds 0-d parameters as (1,)
            torch.testing.assert_close(results[case]["grads"][name].reshape(p.shape), p.grad, rtol=1e-5, atol=1e-5,
                                       msg=f"{case}: {name}")

"""Gradient caching under a plain 2-process PyTorch DDP script (gloo, CPU), with dropout.

Usage: ``python -m tests.training.grad_cache_ddp_worker OUT_DIR``. Rank ``r`` holds rows ``r*B:(r+1)*B`` of the global
batch, seeds its generator ``SEED + r`` and takes one grad-cache step in each of two ways:

* ``no_sync``: ``embed`` is the DDP-wrapped model, ``no_sync`` its context (plain PyTorch usage);
* ``wrapped``: the embeddings and the loss are computed *inside* a DDP-wrapped module's forward,
  which returns the loss; the chunks are recomputed and back-propagated after it, with DDP's reducer
  armed (how ``PolyfuseLitModule.training_step`` / ``backward`` run under Lightning's DDP).

It records the loss, the parameter gradients after DDP's all-reduce and how many times DDP's
communication hook ran (a plain DDP step of the same model: once per bucket). Rank 0 writes
``OUT_DIR/results.pt``; test_grad_cache_ddp.py compares with one process on the global batch.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from polyfuse.training.grad_cache import CachedEmbeddings, grad_cache_step
from tests.distributed.harness import spawn_gloo
from tests.training.grad_cache_models import Towers, chunks_of, global_inputs, grads_of, loss_of

WORLD_SIZE, BATCH_PER_RANK, CHUNK, SEED, DROPOUT = 2, 6, 4, 100, 0.3
CASES = [(loss, way) for loss in ("clip", "siglip") for way in ("no_sync", "wrapped", "plain")]


def towers(loss_name: str) -> Towers:
    model = Towers(DROPOUT)
    model.bias.requires_grad_(loss_name == "siglip")  # InfoNCE has no bias: DDP must not wait for its gradient
    return model


class CachedStep(nn.Module):
    """A module whose forward embeds the chunks without graphs and returns the loss (a training_step)."""

    def __init__(self, model: nn.Module, loss_name: str) -> None:
        super().__init__()
        self.model, self.loss_name = model, loss_name
        self.cache: CachedEmbeddings | None = None

    def forward(self, chunks):
        self.cache = CachedEmbeddings(self.model, chunks, rows=lambda c: c[0].shape[0])
        return loss_of(self.loss_name, self.cache.outputs)


def one_step(loss_name: str, way: str, rank: int) -> dict:
    model = towers(loss_name)
    wrapped = DistributedDataParallel(CachedStep(model, loss_name) if way == "wrapped" else model)
    calls = {"count": 0}

    def counting_hook(state, bucket):
        state["count"] += 1
        return allreduce_hook(None, bucket)

    wrapped.register_comm_hook(calls, counting_hook)
    x_a, x_b = global_inputs(WORLD_SIZE * BATCH_PER_RANK)
    rows = slice(rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK)
    chunks = chunks_of((x_a[rows], x_b[rows]), CHUNK)
    torch.manual_seed(SEED + rank)
    if way == "wrapped":
        loss = wrapped(chunks)
        wrapped.module.cache.backward(loss, parameters=[p for p in model.parameters() if p.requires_grad])
    elif way == "no_sync":
        loss, _ = grad_cache_step(wrapped, chunks, lambda o: loss_of(loss_name, o), rows=lambda c: c[0].shape[0],
                                  no_sync=wrapped.no_sync)
    else:  # plain DDP, no chunks: how many all-reduce calls one step makes
        loss = loss_of(loss_name, wrapped((x_a[rows], x_b[rows])))
        loss.backward()
    return {"loss": float(loss), "grads": grads_of(model), "allreduce_calls": calls["count"]}


def run(rank: int, out_dir: str) -> None:
    results = {f"{loss}/{way}": one_step(loss, way, rank) for loss, way in CASES}
    gathered = [None] * WORLD_SIZE
    dist.all_gather_object(gathered, results)
    if rank == 0:
        torch.save(gathered, os.path.join(out_dir, "results.pt"))


if __name__ == "__main__":
    spawn_gloo(run, WORLD_SIZE, sys.argv[1])

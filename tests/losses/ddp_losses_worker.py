"""Every public loss of ``polyfuse.losses`` in a plain 2-process PyTorch DDP script (gloo, CPU).

Usage: ``python -m tests.losses.ddp_losses_worker OUT_DIR [WORLD_SIZE [LOSS ...]]`` (default: 2 ranks,
every loss). Imports only ``torch``, ``polyfuse.losses`` and the test harness
(no Lightning, which imports ``torch.distributed.nn`` as a side effect and hid issue #18). Each
rank computes every case of :data:`CASES` on its half of a global batch, averages the loss and
the gradients over the ranks as DDP does, and rank 0 writes ``OUT_DIR/results.pt``:
``{"modules": [...], "cases": {name: {"loss": float, "grads": {param: Tensor}}}}``.
test_losses_ddp.py compares them with one process on the global batch.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from polyfuse.losses import ContrastiveLoss, SigLipLoss
from polyfuse.losses.gather import neighbour_exchange_bidir
from tests.distributed.harness import spawn_gloo

WORLD_SIZE, GLOBAL_BATCH, IN_DIM, DIM = 2, 8, 5, 4
# validity of the global batch's rows: rank 0 holds rows 0-3, rank 1 rows 4-7
VALIDITY = {
    "all": None,
    "uneven": [True, True, True, True, True, False, True, False],
    "rank1_empty": [True, True, True, True, False, False, False, False],
}
LOSSES: dict[str, Callable[[], torch.nn.Module]] = {
    "clip": lambda: ContrastiveLoss(local_loss=False, gather_with_grad=True),
    "clip_local": lambda: ContrastiveLoss(local_loss=True, gather_with_grad=True),
    "clip_nograd": lambda: ContrastiveLoss(local_loss=False, gather_with_grad=False),
    "clip_local_nograd": lambda: ContrastiveLoss(local_loss=True, gather_with_grad=False),
    "siglip": lambda: SigLipLoss(),
    "siglip_ring": lambda: SigLipLoss(exchange="ring"),  # chunked: neighbour exchange instead of all-gather
}
CASES = [(loss, validity) for loss in LOSSES for validity in VALIDITY]


def parameters() -> dict[str, Tensor]:
    """The shared parameters (identical on every rank, as DDP keeps them)."""
    g = torch.Generator().manual_seed(0)
    return {"w_a": torch.randn(IN_DIM, DIM, generator=g), "w_b": torch.randn(IN_DIM, DIM, generator=g),
            "log_scale": torch.tensor(2.0), "bias": torch.tensor(-3.0)}


def global_inputs() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(GLOBAL_BATCH, IN_DIM, generator=g), torch.randn(GLOBAL_BATCH, IN_DIM, generator=g)


def loss_and_grads(loss_name: str, x_a: Tensor, x_b: Tensor, valid: Tensor | None,
                   rank: int | None = None, world_size: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss of ``loss_name`` on ``(x_a, x_b)`` and its gradients w.r.t. :func:`parameters`."""
    params = {name: value.clone().requires_grad_() for name, value in parameters().items()}
    loss_fn = LOSSES[loss_name]()
    if rank is not None:
        loss_fn.rank, loss_fn.world_size = rank, world_size
    a = F.normalize(x_a @ params["w_a"], dim=-1)
    b = F.normalize(x_b @ params["w_b"], dim=-1)
    scale = params["log_scale"].exp()
    if loss_name.startswith("siglip"):
        loss = loss_fn(a, b, scale, params["bias"], valid=valid)
    else:
        loss = loss_fn(a, b, scale, valid=valid)
    loss.backward()
    grads = {name: torch.zeros_like(p) if p.grad is None else p.grad for name, p in params.items()}
    return loss.detach(), grads


def run(rank: int, out_dir: str, world_size: int = WORLD_SIZE, losses: tuple[str, ...] = ()) -> None:
    assert "lightning" not in sys.modules, "the worker must not import Lightning"
    x_a, x_b = global_inputs()
    rows = slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
    results = {}
    for loss_name, validity in CASES:
        if losses and loss_name not in losses:
            continue
        flags = VALIDITY[validity]
        valid = None if flags is None else torch.tensor(flags)[rows]
        loss, grads = loss_and_grads(loss_name, x_a[rows], x_b[rows], valid)
        dist.all_reduce(loss)
        for grad in grads.values():  # what DDP does to the gradients
            dist.all_reduce(grad)
        results[f"{loss_name}/{validity}"] = {"loss": float(loss) / world_size,
                                              "grads": {k: v / world_size for k, v in grads.items()}}
    if world_size >= 3:  # the two-way exchange's backward: each gradient goes back to the rank that sent it
        to_left, to_right = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
        from_right, from_left = neighbour_exchange_bidir(to_left, to_right, (rank - 1) % world_size,
                                                         (rank + 1) % world_size)
        ((rank + 1) * from_right.sum() + 10 * (rank + 1) * from_left.sum()).backward()
        received = [None] * world_size
        dist.all_gather_object(received, (to_left.grad.tolist(), to_right.grad.tolist()))
        results["bidir_grads"] = received
    if rank == 0:
        modules = sorted(name for name in sys.modules if name.split(".")[0] in ("lightning", "pytorch_lightning"))
        torch.save({"modules": modules, "cases": results}, os.path.join(out_dir, "results.pt"))


if __name__ == "__main__":
    world = int(sys.argv[2]) if len(sys.argv) > 2 else WORLD_SIZE  # [WORLD_SIZE [LOSS ...]]: a subset on more ranks
    spawn_gloo(run, world, sys.argv[1], world, tuple(sys.argv[3:]))

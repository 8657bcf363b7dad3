"""One rank of the 2-process gloo test of the contrastive losses (run by test_distributed.py).

Usage: ``python -m tests.losses.ddp_worker RANK WORLD_SIZE INIT_FILE OUT_DIR``. Every rank builds the same
global features, takes its slice, computes polyfuse's and open_clip's losses for each setting,
back-propagates, and saves ``{setting: (loss, grad_a, grad_b)}`` to ``OUT_DIR/rank{RANK}.pt``.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from open_clip.loss import SigLipLoss as OpenClipSigLipLoss

from polyfuse.losses import ContrastiveLoss, SigLipLoss
from tests.distributed.harness import init_gloo

BATCH_PER_RANK, DIM, SCALE, BIAS = 4, 8, 10.0, -5.0


def global_features() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(2 * BATCH_PER_RANK, DIM, generator=g), dim=-1)
    b = F.normalize(torch.randn(2 * BATCH_PER_RANK, DIM, generator=g), dim=-1)
    return a, b


def run(rank: int, world_size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    full_a, full_b = global_features()
    rows = slice(rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK)
    settings = {}
    for local_loss in (False, True):
        for with_grad in (False, True):
            key = f"clip-local{int(local_loss)}-grad{int(with_grad)}"
            settings[f"polyfuse-{key}"] = (ContrastiveLoss(local_loss, with_grad), False)
            settings[f"open_clip-{key}"] = (ClipLoss(local_loss, with_grad, rank=rank, world_size=world_size), False)
    settings["polyfuse-siglip"] = (SigLipLoss(), True)
    for impl in ("gather", "bidir"):
        settings[f"open_clip-siglip-{impl}"] = (OpenClipSigLipLoss(rank=rank, world_size=world_size, dist_impl=impl), True)
    results = {}
    for name, (loss_fn, has_bias) in settings.items():
        a = full_a[rows].clone().requires_grad_()
        b = full_b[rows].clone().requires_grad_()
        loss = loss_fn(a, b, torch.tensor(SCALE), torch.tensor(BIAS)) if has_bias else loss_fn(a, b, torch.tensor(SCALE))
        loss.backward()
        results[name] = (loss.detach(), a.grad.clone(), b.grad.clone())
    return results


def main() -> None:
    rank, world_size, init_file, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    init_gloo(rank, world_size, f"file://{init_file}", timeout_s=600)
    try:
        torch.save(run(rank, world_size), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

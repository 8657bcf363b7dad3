"""``PolyfuseLitModule`` with ``model.objective.grad_cache`` under Lightning DDP (2 CPU processes, gloo).

Usage: ``python -m tests.training.grad_cache_lightning_worker OUT_DIR`` (Lightning starts rank 1 by re-running the
command). Each rank fits one optimiser step on its half of a global batch of 20 rows in chunks of 3;
just before the step (after DDP's all-reduce) every rank's gradients are gathered and rank 0 writes
``OUT_DIR/results.pt`` (a list, one ``{"grads": {...}, "pending": bool}`` per rank).
test_grad_cache_ddp.py compares them with one process's plain step on the global batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy

from polyfuse.training.grad_cache import batch_chunks
from tests.training.test_grad_cache_module import make_batch, make_module

WORLD_SIZE, GLOBAL_BATCH, CHUNK = 2, 20, 3


def rank_batches():
    """The global batch's two halves, in rank order."""
    return batch_chunks(make_batch(0, GLOBAL_BATCH), GLOBAL_BATCH // WORLD_SIZE)


class GatherGradients(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        local = {"grads": {n: p.grad.detach().clone() for n, p in pl_module.named_parameters()},
                 "pending": pl_module._grad_cache_pending is not None}
        gathered = [None] * WORLD_SIZE
        dist.all_gather_object(gathered, local)
        if trainer.global_rank == 0:
            torch.save(gathered, self.out / "results.pt")


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    loader = torch.utils.data.DataLoader(rank_batches(), batch_size=None, collate_fn=lambda b: b)
    trainer = L.Trainer(accelerator="cpu", devices=WORLD_SIZE, strategy=DDPStrategy(process_group_backend="gloo"),
                        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[GatherGradients(out)])
    trainer.fit(make_module(CHUNK), loader)


if __name__ == "__main__":
    main()

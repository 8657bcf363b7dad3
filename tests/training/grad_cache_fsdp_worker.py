"""``PolyfuseLitModule`` with ``model.objective.grad_cache`` under FSDP2 (``FSDP2Strategy``, 2 CPU processes, gloo).

Usage: ``python -m tests.training.grad_cache_fsdp_worker OUT_DIR`` (Lightning starts rank 1 by re-running the
command). Each rank fits one optimiser step on its half of a global batch of 20 rows, once with the plain
step and once in chunks of 3; just before each step (after FSDP's reduce-scatter) the full gradients are
gathered and rank 0 writes ``OUT_DIR/results.pt``: ``{"plain" | "cached": {"grads": {...}, "loss": float,
"pending": bool}}``. test_grad_cache_ddp.py compares both with one process's plain step on the global batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from polyfuse.training.sharding import FSDP2Strategy
from tests.training.grad_cache_lightning_worker import CHUNK, WORLD_SIZE, rank_batches
from tests.training.test_grad_cache_module import make_module


class FullGradients(L.Callback):
    """The unsharded gradients before the optimiser step (``full_tensor`` is a collective: every rank calls it)."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}
        self.pending = True
        self.loss = float("nan")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads = {name: p.grad.full_tensor().detach().clone() for name, p in pl_module.named_parameters()}
        self.pending = pl_module._grad_cache_pending is not None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.loss = float(outputs["loss"])


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    results, rank = {}, 0
    for case, chunk in (("plain", None), ("cached", CHUNK)):
        loader = torch.utils.data.DataLoader(rank_batches(), batch_size=None, collate_fn=lambda b: b)
        record = FullGradients()
        trainer = L.Trainer(accelerator="cpu", devices=WORLD_SIZE, strategy=FSDP2Strategy(process_group_backend="gloo"),
                            max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                            callbacks=[record])
        trainer.fit(make_module(chunk), loader)
        rank = trainer.global_rank
        results[case] = {"grads": record.grads, "loss": record.loss, "pending": record.pending}
    if rank == 0:
        torch.save(results, out / "results.pt")


if __name__ == "__main__":
    main()

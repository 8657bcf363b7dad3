"""MultimodalLM stage 2 (LoRA) under DDP and FSDP2 on 2 CPU processes (gloo); run by test_mllm_ddp.py.

Usage: ``python -m tests.distributed.mllm_worker OUT_DIR`` (from the repository root). Lightning starts rank 1 by re-running the command.

The model is ``experiment=avdigits_llava_stage2`` (tiny random Llama + ViT + audio CNN, MLP connector,
LoRA r=8 without dropout) trained with SGD; each rank fits ``fsdp_worker.STEPS`` steps on its half of
the same global batches, once under DDP and once under FSDP2 (:class:`FSDP2Strategy`, what
``trainer=fsdp_sim`` runs), through ``fsdp_worker``'s helpers. Results: ``OUT_DIR/batches.pt``,
``OUT_DIR/rank{R}.pt`` (losses), ``OUT_DIR/weights_mllm_{ddp,fsdp}.pt`` (rank 0, full state dicts).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch.strategies import DDPStrategy

from polyfuse.training.sharding import FSDP2Strategy

from . import fsdp_worker as worker

NAME = "mllm"
OVERRIDES = ["experiment=avdigits_llava_stage2", "model.scheduler=null", "model.model.lora.dropout=0.0",
             "model.model.eval_generate=0", *worker.SGD]


def register(module=worker) -> None:
    """Make ``fsdp_worker.build_module("mllm")`` / ``global_batches("mllm", n)`` build this model."""
    module.MODELS[NAME] = OVERRIDES


def main() -> None:
    out = Path(sys.argv[1])
    register()
    batches = worker.global_batches(NAME, worker.STEPS)
    results, rank = {}, 0
    for kind, strategy in (("ddp", DDPStrategy(process_group_backend="gloo")),
                           ("fsdp", FSDP2Strategy(process_group_backend="gloo"))):
        module, trainer, record = worker.fit(NAME, strategy, batches)
        rank = trainer.global_rank
        weights = worker.full_weights(module) if kind == "fsdp" else module.state_dict()
        results[kind] = torch.stack(record.losses)
        if rank == 0:
            torch.save({k: v.detach().cpu().clone() for k, v in weights.items()}, out / f"weights_{NAME}_{kind}.pt")
    if rank == 0:
        torch.save(batches, out / "batches.pt")
    torch.save(results, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()

"""FSDP2 (polyfuse.training.sharding.FSDP2Strategy) against DDP on 2 CPU processes (gloo); run by
test_fsdp.py, which also compares both with one process on the global batch.

Usage: ``python fsdp_worker.py OUT_DIR``. Lightning starts rank 1 by re-running the command.

For each model of :data:`MODELS` (a multimodal classifier with cross-attention fusion; CLIP towers
with the contrastive head, whose loss all-gathers the embeddings over ranks), built from the repo's
Hydra configs with dropout 0, each rank fits :data:`STEPS` optimizer steps on its half of the same
global batches (gradient clipping on), once with DDP and once with FSDP2, and records the losses;
rank 0 saves the full weights after each fit. Then (CLIP) an uninterrupted 2-epoch FSDP2 run, and
the same run stopped after epoch 1 (sharded checkpoint directory) and resumed with ``ckpt_path``.

Results: ``OUT_DIR/batches.pt`` (the global batches), ``OUT_DIR/rank{R}.pt`` (losses per run),
``OUT_DIR/weights_{run}.pt`` (rank 0, full state dicts), ``OUT_DIR/ckpt/last.ckpt/`` (sharded).
"""

from __future__ import annotations

import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader

from polyfuse.attention import set_default_backend
from polyfuse.batch import Batch, ModalityInput
from polyfuse.cli.config import config_dir
from polyfuse.training.sharding import FSDP2Strategy

WORLD_SIZE, BATCH_PER_RANK, STEPS = 2, 4, 3
NO_DROPOUT = ["model.encoders.text.dropout=0.0", "model.fusion.dropout=0.0", "model.head.dropout=0.0"]
# The multimodal model trains with plain SGD: AdamW divides each gradient by its magnitude, which turns
# the rounding noise of (near-)zero gradients into lr-sized steps that differ between any two runs
# that round differently; with SGD every weight difference measures how far the gradients agree.
# CLIP keeps its configured AdamW (what `experiment=clip_pretrain_avdigits` runs).
SGD = ["model.optimizer._target_=torch.optim.SGD", "model.optimizer.lr=0.1", "model.optimizer.weight_decay=0.0"]
MODELS: dict[str, list[str]] = {
    "multimodal": ["data.modalities=[image,text]", "model/fusion=cross_attention", "model.scheduler=null",
                   *NO_DROPOUT, *SGD],
    "clip": ["experiment=clip_pretrain_avdigits", "model.scheduler=null"],
}


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=[f"data.batch_size={WORLD_SIZE * BATCH_PER_RANK}",
                                                       "data.num_workers=0", *overrides])


def build_module(name: str):
    """The LightningModule of ``MODELS[name]``, initialised from seed 0."""
    torch.manual_seed(0)
    return hydra.utils.instantiate(compose_config(MODELS[name]).model)


def global_batches(name: str, count: int) -> list[Batch]:
    """The first ``count`` training batches (global size) of the model's data config."""
    cfg = compose_config(MODELS[name])
    torch.manual_seed(0)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append(batch)
        if len(batches) == count:
            return batches
    raise RuntimeError(f"{name}: fewer than {count} training batches")


def take_rows(batch: Batch, start: int, stop: int) -> Batch:
    """Rows ``start:stop`` of every per-sample tensor and list of a batch."""
    size = batch.batch_size

    def cut(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == size:
            return value[start:stop]
        if isinstance(value, list) and len(value) == size:
            return value[start:stop]
        if isinstance(value, ModalityInput):
            return replace(value, **{f.name: cut(getattr(value, f.name)) for f in fields(value)})
        if isinstance(value, dict):
            return {key: cut(item) for key, item in value.items()}
        return value

    return Batch(cut(batch.inputs), cut(batch.targets), cut(batch.ids), cut(batch.extras))


def loader(batches: list[Batch], rank: int | None) -> DataLoader:
    """Already-collated batches, in order; ``rank``: that rank's half of each (``None``: all of it)."""
    if rank is not None:
        batches = [take_rows(b, rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK) for b in batches]
    return DataLoader(batches, batch_size=None, shuffle=False)


class RecordLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.losses.append(outputs["loss"].detach().clone())


class StopAfterFirstEpoch(L.Callback):
    """Ends fit after epoch 0 (the checkpoint callback still saves), as a killed run would have."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


def full_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded weights (collective under FSDP2: every rank calls it; rank 0 gets them)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def fit(name: str, strategy, batches: list[Batch], max_epochs: int = 1, callbacks: list | None = None,
        ckpt_path: str | None = None) -> tuple[torch.nn.Module, L.Trainer, RecordLosses]:
    module, record = build_module(name), RecordLosses()
    trainer = L.Trainer(accelerator="cpu", devices=WORLD_SIZE, strategy=strategy, max_epochs=max_epochs,
                        use_distributed_sampler=False, gradient_clip_val=1.0, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=bool(callbacks),
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[record, *(callbacks or [])])
    trainer.fit(module, train_dataloaders=loader(batches, trainer.global_rank), ckpt_path=ckpt_path,
                weights_only=True)
    return module, trainer, record


def main() -> None:
    out = Path(sys.argv[1])
    set_default_backend("sdpa")
    data = {name: global_batches(name, STEPS) for name in MODELS}
    results: dict[str, Any] = {}
    rank = 0
    for name, batches in data.items():
        for kind, strategy in (("ddp", DDPStrategy(process_group_backend="gloo")),
                               ("fsdp", FSDP2Strategy(process_group_backend="gloo"))):
            module, trainer, record = fit(name, strategy, batches)
            rank = trainer.global_rank
            weights = full_weights(module) if kind == "fsdp" else module.state_dict()
            results[f"{name}/{kind}"] = torch.stack(record.losses)
            if kind == "fsdp":
                results[f"{name}/units"] = [n for n, m in module.named_modules() if type(m).__name__.startswith("FSDP")]
                local = sum(p.to_local().numel() for p in module.parameters())
                results[f"{name}/local_fraction"] = local / sum(p.numel() for p in module.parameters())
            if rank == 0:
                torch.save({k: v.detach().cpu().clone() for k, v in weights.items()}, out / f"weights_{name}_{kind}.pt")

    # sharded checkpoint: stop after epoch 0, resume to epoch 2; compare with an uninterrupted run
    batches = data["clip"][:2]
    module, trainer, _ = fit("clip", FSDP2Strategy(process_group_backend="gloo"), batches, max_epochs=2)
    uninterrupted = full_weights(module)
    checkpoint = ModelCheckpoint(dirpath=out / "ckpt", filename="last", save_top_k=1, enable_version_counter=False)
    fit("clip", FSDP2Strategy(process_group_backend="gloo"), batches, max_epochs=2,
        callbacks=[checkpoint, StopAfterFirstEpoch()])
    module, trainer, _ = fit("clip", FSDP2Strategy(process_group_backend="gloo"), batches, max_epochs=2,
                             callbacks=[ModelCheckpoint(dirpath=out / "ckpt_resumed", filename="last")],
                             ckpt_path=str(out / "ckpt" / "last.ckpt"))
    resumed = full_weights(module)
    results["resume/steps"] = trainer.global_step
    if rank == 0:
        torch.save({"uninterrupted": uninterrupted, "resumed": resumed}, out / "weights_resume.pt")
        torch.save(data, out / "batches.pt")
    torch.save(results, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()

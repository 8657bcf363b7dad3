"""Lightning DDP evaluation on 2 CPU processes (gloo), run by test_evaluation.py.

Usage: ``python eval_worker.py OUT_DIR``. Lightning starts rank 1 by re-running this command. Each
rank validates and tests the default AV-digits model (seeded, untrained) and writes
``OUT_DIR/rank{R}.json``: the sample ids it saw per split and the logged metrics; rank 0 also saves
the initial weights (``OUT_DIR/model.pt``) for the single-process reference.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch import Callback
from lightning.pytorch.strategies import DDPStrategy

from polyfuse.cli.config import config_dir

OVERRIDES = ["data.batch_size=67"]  # 269 test samples: rank 0 gets 3 batches (67, 67, 1), rank 1 two


def compose_config():
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=OVERRIDES)


class RecordIds(Callback):
    """Sample ids per evaluated split, in the order this rank saw them."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = defaultdict(list)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.seen["val"].extend(batch.ids)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.seen[pl_module.test_names[dataloader_idx]].extend(batch.ids)


def main() -> None:
    out = Path(sys.argv[1])
    cfg = compose_config()
    L.seed_everything(0)
    model = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    recorder = RecordIds()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(process_group_backend="gloo"),
                        logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])
    if trainer.global_rank == 0:
        torch.save(model.state_dict(), out / "model.pt")
    metrics: dict[str, float] = {}
    for results in trainer.validate(model, datamodule=datamodule) + trainer.test(model, datamodule=datamodule):
        metrics.update(results)
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps({"seen": recorder.seen, "metrics": metrics}))


if __name__ == "__main__":
    main()

"""Contrastive image/audio/text training under Lightning DDP (``trainer=ddp_sim``: 2 CPU processes,
gloo) on a media folder with bad files; run by test_bad_data_ddp.py.

Usage: ``python bad_data_worker.py OUT_DIR DATA_ROOT TOKENIZER``. Lightning starts rank 1 by
re-running the command. Every rank writes ``OUT_DIR/rank{R}.pt``: the bad-sample history of the
data module's trackers and, per training batch, the epoch, ids and validity flags the model saw.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from polyfuse.cli.config import config_dir, register_resolvers

EPOCHS, BATCH = 2, 4


def overrides(root: str, tokenizer: str) -> list[str]:
    return ["trainer=ddp_sim", "data=av_folder", f"data.root={root}", f"data.text.tokenizer={tokenizer}",
            "data.image.size=32", "data.image.mode=L", "data.image.mean=[0.5]", "data.image.std=[0.5]",
            # pad_to_max: an all-placeholder batch needs audio of a few frames (see the report / docs)
            "data.audio.max_seconds=0.5", "data.audio.sample_rate=8000", "+data.audio.pad_to_max=true",
            "data.num_workers=0",
            f"data.batch_size={BATCH}", "data.bad_samples.max_bad_fraction=0.5", "data.num_classes=2",
            "model/head=contrastive", "model.fusion=null", "model.scheduler=null", "attention_backend=sdpa",
            f"trainer.max_epochs={EPOCHS}", "trainer.num_sanity_val_steps=0", "trainer.enable_model_summary=false",
            "trainer.log_every_n_steps=1", "logger=[]", "callbacks=[]"]


class SeenRows(L.Callback):
    """Records what every training step received: ``(epoch, ids, valid flags, loss)``."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, list[str], list[bool], float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.rows.append((trainer.current_epoch, list(batch.ids), batch.valid_or_full().tolist(), float(loss)))


def main(out_dir: str, root: str, tokenizer: str) -> None:
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides(root, tokenizer), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path(out_dir) / "run")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    from polyfuse.attention import set_default_backend

    set_default_backend("sdpa")
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    seen = SeenRows()
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[seen], logger=False,
                                                 enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, datamodule=datamodule)
    torch.save({"history": datamodule.bad_sample_report(), "rows": seen.rows, "world_size": trainer.world_size},
               Path(out_dir) / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:4])

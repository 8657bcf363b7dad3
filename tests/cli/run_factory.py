"""Test helper: tiny trained runs (a few steps on AV-digits), cached for the whole test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from polyfuse.cli.config import config_dir

TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1", "data.batch_size=32", "logger=csv", "callbacks.progress_bar=null",
        "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0"]


def compose_config(name: str, overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """Compose ``configs/<name>.yaml`` as the CLI does (Hydra runtime dir = ``output_dir``)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    GlobalHydra.instance().clear()
    return cfg


def trained_run(factory: pytest.TempPathFactory, fusion: str = "concat", seed: int = 0) -> Path:
    """A run directory trained for 2 steps with ``model/fusion=<fusion>``; trained once per session."""
    from polyfuse.cli.train import train

    run = factory.getbasetemp() / "polyfuse_runs" / f"{fusion}_{seed}"
    if not (run / "summary.json").is_file():
        train(compose_config("train", [f"model/fusion={fusion}", f"seed={seed}", *TINY], run))
    return run

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


#: run directory -> the summary ``train()`` returned for it (this session's runs)
SUMMARIES: dict[Path, dict] = {}


def trained_run(factory: pytest.TempPathFactory, fusion: str = "concat", seed: int = 0) -> Path:
    """A run directory trained for 2 steps with ``model/fusion=<fusion>``; trained once per session
    (its summary: ``SUMMARIES[run]``)."""
    from polyfuse.cli.train import train

    run = factory.getbasetemp() / "polyfuse_runs" / f"{fusion}_{seed}"
    if run not in SUMMARIES:
        SUMMARIES[run], _ = train(compose_config("train", [f"model/fusion={fusion}", f"seed={seed}", *TINY], run))
    return run


def untrained_run(cfg: DictConfig, run: Path, seed: int = 0) -> dict:
    """Write a run directory (resolved ``config.yaml`` + ``checkpoints/best.safetensors``) holding the
    freshly built model of ``cfg`` (seeded): what a finished run leaves, without training. Returns its
    state dict."""
    import hydra
    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from polyfuse.training.run_dir import CHECKPOINTS, config_file

    torch.manual_seed(seed)
    state = {key: value.contiguous() for key, value in hydra.utils.instantiate(cfg.model).state_dict().items()}
    (run / CHECKPOINTS).mkdir(parents=True)
    save_file(state, str(run / CHECKPOINTS / "best.safetensors"))
    config_file(run).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return state


TIMING_COLUMNS = {"train/samples_per_sec"}  # differ between any two runs


def train_process(run_dir: Path, *overrides: str) -> "subprocess.CompletedProcess[str]":
    """``python -m polyfuse.cli.train`` in a subprocess writing to ``run_dir``, with the repository on the
    path (for test callbacks such as ``tests.cli.crash_callback.CrashAtStep``) and no inherited DDP variables."""
    import subprocess
    import sys

    from polyfuse.cli.config import repo_root

    from ..distributed.harness import clean_env

    return subprocess.run([sys.executable, "-m", "polyfuse.cli.train", f"hydra.run.dir={run_dir}", *overrides],
                          env=clean_env(POLYFUSE_ROOT=str(repo_root())), capture_output=True, text=True, timeout=600)


def csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a ``metrics.csv`` without the timing columns."""
    import csv

    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


def checkpoint_weights(path: Path) -> dict:
    """The ``state_dict`` of a Lightning checkpoint file."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]

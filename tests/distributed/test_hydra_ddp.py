"""Hydra + Lightning DDP: one run directory per run (not per rank), files written by rank 0 only,
and a clear refusal of local DDP inside a Hydra multirun."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from omegaconf import open_dict, read_write

from polyfuse.training.launch import MultirunLaunchError, check_multirun_launch

from .harness import clean_env


@pytest.mark.slow
def test_ddp_sim_run_writes_one_run_directory(tmp_path: Path):
    command = [sys.executable, "-m", "polyfuse.cli.train", "trainer=ddp_sim", f"paths.log_dir={tmp_path}",
               "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
               "+trainer.limit_test_batches=1", "data.batch_size=8", "logger=csv"]
    proc = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    runs = [path for path in (tmp_path / "train" / "runs").iterdir()]
    assert len(runs) == 1, f"one run directory expected, got {runs}"
    run = runs[0]
    assert (run / "train_ddp_process_1.log").is_file()        # rank 1 ran in this directory
    for name in ("config.yaml", ".hydra/config.yaml", "summary.json", "metrics.csv", "checkpoints/best.ckpt",
                 "csv/metrics.csv"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in tmp_path.rglob("config.yaml")) == ["config.yaml", "config.yaml"]  # run + .hydra
    assert not list(tmp_path.rglob("version_*")), "a logger on another rank opened its own directory"
    assert proc.stdout.count("polyfuse run summary") == 1    # printed by rank 0 only


def _trainer(compose_train, overrides: list[str], multirun: bool):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    cfg = compose_train(overrides)
    with read_write(cfg.hydra), open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN if multirun else RunMode.RUN
    HydraConfig.instance().set_config(cfg)
    return hydra.utils.instantiate(cfg.trainer, logger=False)


def test_multirun_refuses_to_launch_local_ddp(compose_train, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(MultirunLaunchError, match=r"multirun \(-m\).*hydra/launcher=submitit_slurm"):
        check_multirun_launch(_trainer(compose_train, ["trainer=ddp_sim"], multirun=True))


def test_single_runs_and_scheduler_launched_ranks_are_fine(compose_train, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    check_multirun_launch(_trainer(compose_train, ["trainer=ddp_sim"], multirun=False))
    check_multirun_launch(_trainer(compose_train, ["trainer=cpu"], multirun=True))
    monkeypatch.setenv("LOCAL_RANK", "0")   # processes started by torchrun / SLURM: nothing re-runs the sweep
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_multirun_launch(_trainer(compose_train, ["trainer=ddp_sim"], multirun=True))

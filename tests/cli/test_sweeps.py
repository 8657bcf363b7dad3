"""Sweeps: the Optuna search and the submitit launchers run ``polyfuse-train`` as Hydra multiruns.

The SLURM launcher config and its requeue path: tests/distributed/test_slurm_launcher.py, tests/cli/test_slurm_requeue.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from polyfuse.cli.config import repo_root
from polyfuse.reporting import find_runs

from .run_factory import TINY, compose_config


def _train(*overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, POLYFUSE_ROOT=str(repo_root()))
    return subprocess.run([sys.executable, "-m", "polyfuse.cli.train", *overrides], env=env, capture_output=True,
                          text=True, timeout=900)


def test_optuna_search_config_composes_with_its_sweeper():
    cfg = compose_config("train", ["hparams_search=avdigits_optuna"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/acc"
    assert set(cfg.hydra.sweeper.params) == {"model.optimizer.lr", "model.optimizer.weight_decay",
                                             "model.fusion_dim", "data.batch_size"}


@pytest.mark.slow
def test_optuna_search_runs_trials_and_reports_the_best(tmp_path: Path):
    done = _train("hparams_search=avdigits_optuna", "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.sampler.n_startup_trials=2", f"hydra.sweep.dir={tmp_path}", *TINY, "test=false")
    assert done.returncode == 0, done.stderr[-3000:]
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    # data.batch_size is fixed on the command line (TINY), which takes it out of the search space
    assert set(results["best_params"]) == {"model.optimizer.lr", "model.optimizer.weight_decay", "model.fusion_dim"}
    assert 0.0 <= results["best_value"] <= 1.0
    assert len(find_runs(tmp_path)) == 2


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_multirun(tmp_path: Path):
    done = _train("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20", "model/fusion=concat,late",
                  f"hydra.sweep.dir={tmp_path}", *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = find_runs(tmp_path)
    assert sorted(run.fusion for run in runs) == ["concat", "late"]
    assert all("test/acc" in run.summary["test"] for run in runs)

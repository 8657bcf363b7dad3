"""The run directory's one owner: checkpoint resolution, attention backend rule, monitored metric."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from polyfuse.training import run_dir


def _run(tmp_path: Path, *files: str) -> Path:
    (tmp_path / "checkpoints").mkdir(parents=True)
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    for name in files:
        torch.save({"state_dict": {"w": torch.ones(1)}}, tmp_path / "checkpoints" / name)
    return tmp_path


def test_weights_prefer_safetensors_and_resume_takes_only_the_training_state(tmp_path: Path):
    from safetensors.torch import save_file

    run = _run(tmp_path, "best.ckpt", "last.ckpt")
    assert run_dir.checkpoint_file(run, "best").name == "best.ckpt"
    save_file({"w": torch.ones(1)}, str(run / "checkpoints" / "best.safetensors"))
    assert run_dir.checkpoint_file(run, "best").name == "best.safetensors"
    last = run_dir.resume_checkpoint("last", run)
    assert last == (run / "checkpoints" / "last.ckpt").resolve() and run_dir.run_dir_of(last) == run.resolve()
    (run / "checkpoints" / "last.ckpt").unlink()
    assert run_dir.resume_checkpoint("last", run) is None  # a fresh start
    with pytest.raises(FileNotFoundError, match="no last checkpoint"):
        run_dir.checkpoint_file(run, "last")


@pytest.mark.parametrize("backend, deterministic, expected", [("auto", False, "auto"), ("auto", True, "sdpa"),
                                                              ("reference", True, "reference")])
def test_attention_backend_is_one_rule_for_training_and_reloading(backend, deterministic, expected):
    cfg = OmegaConf.create({"attention_backend": backend, "deterministic": deterministic})
    assert run_dir.attention_backend(cfg) == expected


def _module(monitor: str, mode: str) -> SimpleNamespace:
    return SimpleNamespace(model=SimpleNamespace(head=SimpleNamespace(monitor=monitor, monitor_mode=mode)))


def test_the_head_declares_the_monitored_metric_and_the_config_overrides_it():
    module = _module("rsum", "max")
    assert run_dir.monitored_metric({"monitor": None, "monitor_mode": None}, module) == ("val/rsum", "max")
    assert run_dir.monitored_metric({"monitor": "val/rsum", "monitor_mode": None}, module) == ("val/rsum", "max")
    assert run_dir.monitored_metric({"monitor": "val/loss", "monitor_mode": "min"}, module) == ("val/loss", "min")
    with pytest.raises(ValueError, match="set `monitor_mode`"):
        run_dir.monitored_metric({"monitor": "val/loss", "monitor_mode": None}, module)
    with pytest.raises(ValueError, match="no task head"):
        run_dir.monitored_metric({}, SimpleNamespace())
    cfg = OmegaConf.create({"monitor": None, "monitor_mode": None, "ckpt": {"monitor": "${monitor}"}})
    run_dir.set_monitored_metric(cfg, module)
    assert cfg.ckpt.monitor == "val/rsum" and cfg.monitor_mode == "max"


def test_the_default_config_monitors_what_the_head_declares(compose_train):
    import hydra

    cfg = compose_train()
    assert cfg.monitor is None  # configs/train.yaml: the head's
    module = hydra.utils.instantiate(cfg.model)
    assert run_dir.set_monitored_metric(cfg, module) == (module.monitor, module.model.head.monitor_mode)
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc"

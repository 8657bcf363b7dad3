"""Config discovery (checkout vs installed wheel) and a researcher's own config tree on top of polyfuse's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from hydra.errors import ConfigCompositionException

from polyfuse.cli import config
from polyfuse.fusion import GatedMultimodalUnit

REPO = Path(__file__).resolve().parents[2]

MY_EXPERIMENT = """\
# @package _global_
# A researcher's experiment: polyfuse's data, encoders and head, this project's fusion config.
defaults:
  - override /model/fusion: my_gated
tags: [my_project]
data:
  modalities: [image, text]
model:
  fusion_dim: 48
"""
MY_FUSION = """\
# this project's variant of polyfuse's GMU
_target_: polyfuse.fusion.GatedMultimodalUnit
_partial_: true
dropout: 0.25
"""


@pytest.fixture
def my_project(tmp_path: Path) -> Path:
    """A project directory outside the checkout with its own ``configs/`` tree."""
    configs = tmp_path / "my_project" / "configs"
    (configs / "experiment").mkdir(parents=True)
    (configs / "model" / "fusion").mkdir(parents=True)
    (configs / "experiment" / "my_exp.yaml").write_text(MY_EXPERIMENT)
    (configs / "model" / "fusion" / "my_gated.yaml").write_text(MY_FUSION)
    return configs


def test_checkout_is_found_from_the_source_tree(monkeypatch):
    monkeypatch.delenv("POLYFUSE_ROOT", raising=False)
    if config.PACKAGE_DIR != REPO / "src" / "polyfuse":
        pytest.skip("polyfuse is not imported from this checkout's src/")
    assert config.checkout_root() == REPO
    assert config.config_dir() == REPO / "configs"
    assert config.avdigits_dir() == REPO / "data" / "avdigits"


def test_installed_layout_uses_the_packaged_files_and_the_cwd(monkeypatch, tmp_path):
    """As in a wheel: no checkout around the package -> packaged configs and dataset, runs under cwd."""
    package = tmp_path / "site-packages" / "polyfuse"
    (package / "configs").mkdir(parents=True)
    (package / "configs" / "train.yaml").write_text("defaults: []\n")
    (package / "avdigits_data").mkdir()
    (package / "avdigits_data" / "metadata.jsonl").write_text("{}\n")
    monkeypatch.delenv("POLYFUSE_ROOT", raising=False)
    monkeypatch.setattr(config, "PACKAGE_DIR", package)
    monkeypatch.setattr(config, "PACKAGED_CONFIGS", package / "configs")
    monkeypatch.setattr(config, "PACKAGED_AVDIGITS", package / "avdigits_data")
    monkeypatch.chdir(tmp_path)
    assert config.checkout_root() is None
    assert config.repo_root() == tmp_path
    assert config.config_dir() == package / "configs"
    assert config.avdigits_dir() == package / "avdigits_data"
    # a rebuilt copy under ./data/avdigits takes precedence over the packaged one
    (tmp_path / "data" / "avdigits").mkdir(parents=True)
    (tmp_path / "data" / "avdigits" / "metadata.jsonl").write_text("{}\n")
    assert config.avdigits_dir() == tmp_path / "data" / "avdigits"
    # POLYFUSE_ROOT without configs/: data and runs there, configs still the packaged ones
    monkeypatch.setenv("POLYFUSE_ROOT", str(tmp_path / "elsewhere"))
    assert config.repo_root() == tmp_path / "elsewhere"
    assert config.config_dir() == package / "configs"


def _check_my_experiment(cfg) -> None:
    assert list(cfg.tags) == ["my_project"]
    assert cfg.model.fusion.dropout == 0.25
    assert cfg.data.root == str(REPO / "data" / "avdigits")  # polyfuse's data group, the embedded dataset
    module = hydra.utils.instantiate(cfg.model)
    assert set(module.model.encoders) == {"image", "text"}
    fusion = module.model.fusion
    assert isinstance(fusion, GatedMultimodalUnit) and fusion.out_dim == 48 and fusion.drop.p == 0.25
    features = {m: torch.randn(2, dim) for m, dim in fusion.dims.items()}
    assert fusion(features).pooled.shape == (2, 48)


def test_own_experiment_via_environment_variable(compose_train, my_project, monkeypatch):
    monkeypatch.setenv("POLYFUSE_CONFIG_PATH", str(my_project))
    cfg = compose_train(["experiment=my_exp"])
    assert list(cfg.hydra.searchpath) == [f"file://{my_project}"]
    _check_my_experiment(cfg)


def test_own_experiment_via_searchpath_override(compose_train, my_project, monkeypatch):
    monkeypatch.delenv("POLYFUSE_CONFIG_PATH", raising=False)
    with pytest.raises(ConfigCompositionException, match="my_exp"):
        compose_train(["experiment=my_exp"])  # not found without the project's tree
    _check_my_experiment(compose_train([f"hydra.searchpath=[file://{my_project}]", "experiment=my_exp"]))


def test_config_path_must_be_a_directory(compose_train, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYFUSE_CONFIG_PATH", str(tmp_path / "missing"))
    with pytest.raises(ConfigCompositionException) as raised:
        compose_train([])
    messages = []
    error: BaseException | None = raised.value
    while error is not None:  # Hydra wraps the resolver's error (the CLI prints the chain)
        messages.append(str(error))
        error = error.__cause__
    assert any("POLYFUSE_CONFIG_PATH" in m and "missing' is not a directory" in m for m in messages), messages


@pytest.mark.slow
def test_own_experiment_via_config_dir_on_the_command_line(my_project, tmp_path):
    """``polyfuse-train --config-dir <project>/configs experiment=my_exp`` from the project directory."""
    env = {k: v for k, v in os.environ.items() if k not in ("POLYFUSE_CONFIG_PATH",)}
    result = subprocess.run(
        [sys.executable, "-m", "polyfuse.cli.train", "--config-dir", str(my_project), "experiment=my_exp",
         "--cfg", "job", "--resolve"],
        cwd=my_project.parent, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "- my_project" in result.stdout and "dropout: 0.25" in result.stdout

"""Shared fixtures: composing the Hydra configs as the CLI does, and the embedded dataset."""

from __future__ import annotations

import glob
import os

# Triton decides when a function is decorated whether it is compiled or interpreted, and that
# includes its own standard library (tl.zeros, ...), decorated when triton.language is first
# imported -- which lightning does. So TRITON_INTERPRET must be set before anything imports torch
# or lightning: here, at the top of the root conftest. Without an NVIDIA device the kernels run in
# Triton's CPU interpreter; other tests never select backend="triton" on CPU.
if not glob.glob("/dev/nvidia[0-9]*"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
# attention backend "auto" keeps its choices in ~/.cache unless told otherwise: tests never read or
# write the user's cache (each run decides afresh; tests of the cache file point it at tmp_path)
os.environ["POLYFUSE_AUTO_CACHE"] = "off"

from pathlib import Path
from typing import Callable

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from polyfuse.cli.config import config_dir, register_resolvers, repo_root

register_resolvers()

REPO_ROOT = repo_root()
CONFIG_DIR = config_dir()
AVDIGITS = REPO_ROOT / "data" / "avdigits"


@pytest.fixture
def single_thread():
    """One intra-op thread for the test: fastest for tiny tensors, and no spinning on a shared CPU.
    Directories of tiny-tensor tests use it for every test (``usefixtures`` / an autouse wrapper)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests run only where CUDA is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``configs/train.yaml`` with overrides, with Hydra's runtime dir set to ``tmp_path``."""

    def _compose(overrides: list[str] | None = None) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides or []), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def avdigits_root() -> Path:
    return AVDIGITS

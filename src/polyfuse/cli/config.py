"""Locating the repository's ``configs/`` and registering polyfuse's OmegaConf resolvers."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def repo_root() -> Path:
    """The polyfuse checkout (``POLYFUSE_ROOT`` if set, else the tree holding ``configs/``, else cwd)."""
    if "POLYFUSE_ROOT" in os.environ:
        return Path(os.environ["POLYFUSE_ROOT"]).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "configs" / "train.yaml").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def config_dir() -> Path:
    """Directory of the Hydra configs (``POLYFUSE_CONFIG_DIR`` overrides)."""
    return Path(os.environ.get("POLYFUSE_CONFIG_DIR", repo_root() / "configs")).resolve()


def register_resolvers() -> None:
    """``${polyfuse_root:}`` -> the repository root, used by ``configs/paths``."""
    if not OmegaConf.has_resolver("polyfuse_root"):
        OmegaConf.register_new_resolver("polyfuse_root", lambda: str(repo_root()))


register_resolvers()

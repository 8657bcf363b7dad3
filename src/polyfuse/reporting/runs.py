"""Training run directories: finding them, reading what they recorded, loading their model.

A run directory (left by ``polyfuse-train``) holds ``config.yaml`` (resolved), ``summary.json``,
``metrics.csv``, ``checkpoints/{best,last}.ckpt`` (+ ``best.safetensors``) and, in a Hydra
multirun, ``.hydra/overrides.yaml`` and ``.hydra/hydra.yaml`` (the config-group choices).
``polyfuse-eval`` adds ``robustness/robustness.csv``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from polyfuse.training.sharding import is_sharded_checkpoint, match_parameter_shapes, read_checkpoint

__all__ = ["Run", "find_runs", "load_weights", "load_model", "checkpoint_file", "ROBUSTNESS_DIR"]

ROBUSTNESS_DIR = "robustness"


@dataclass
class Run:
    """What one run directory recorded.

    Attributes:
        path: the directory. overrides: its command-line overrides (``key=value``; empty outside
            Hydra). choices: config-group choices (``{"model/fusion": "concat", ...}``).
        summary: ``summary.json``. config: ``config.yaml`` as a plain dict.
    """

    path: Path
    overrides: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def seed(self) -> int | None:
        seed = self.config.get("seed")
        return None if seed is None else int(seed)

    @property
    def fusion(self) -> str:
        """The ``model/fusion`` choice, else the fusion class name from the config."""
        if self.choices.get("model/fusion"):
            return self.choices["model/fusion"]
        target = str(((self.config.get("model") or {}).get("fusion") or {}).get("_target_", "?"))
        return target.rsplit(".", 1)[-1]

    def history(self) -> pd.DataFrame:
        """``metrics.csv``: one row per epoch (empty frame when missing)."""
        path = self.path / "metrics.csv"
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()

    def robustness(self) -> pd.DataFrame:
        """``robustness/robustness.csv`` written by ``polyfuse-eval`` (empty frame when missing)."""
        path = self.path / ROBUSTNESS_DIR / "robustness.csv"
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def _read_run(path: Path) -> Run:
    hydra_dir = path / ".hydra"
    overrides = OmegaConf.to_container(OmegaConf.load(hydra_dir / "overrides.yaml")) \
        if (hydra_dir / "overrides.yaml").is_file() else []
    choices: dict[str, str] = {}
    if (hydra_dir / "hydra.yaml").is_file():
        runtime = OmegaConf.load(hydra_dir / "hydra.yaml").hydra.runtime
        choices = {str(k): str(v) for k, v in OmegaConf.to_container(runtime.choices).items()
                   if v is not None and not str(k).startswith("hydra/")}
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else {}
    config = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"))
    return Run(path=path, overrides=[str(o) for o in overrides], choices=choices, summary=summary,
               config=config)  # type: ignore[arg-type]


def find_runs(root: str | Path) -> list[Run]:
    """Every run under ``root`` (``root`` itself if it is a run), sorted by path.

    A run is a directory with ``config.yaml`` and ``summary.json``; multirun numbering sorts
    numerically (``2`` before ``10``).
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such run or multirun directory: {root}")
    candidates = [root] if (root / "config.yaml").is_file() else []
    candidates += [p.parent for p in root.rglob("config.yaml") if p.parent != root and ".hydra" not in p.parts]
    runs = [_read_run(p) for p in candidates if (p / "summary.json").is_file()]
    if not runs:
        raise FileNotFoundError(f"{root}: no training run found (a run has config.yaml and summary.json)")

    def key(run: Run) -> list[Any]:
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in run.path.relative_to(root).parts]

    return sorted(runs, key=key)


def checkpoint_file(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """``best`` / ``last`` -> the run's checkpoint (``best.safetensors`` preferred for ``best``), or a path."""
    run_dir = Path(run_dir)
    if checkpoint in ("best", "last"):
        options = [run_dir / "checkpoints" / f"{checkpoint}.{suffix}" for suffix in ("safetensors", "ckpt")]
        for path in options:
            if path.is_file() or is_sharded_checkpoint(path):
                return path
        looked = ", ".join(p.name for p in options)
        raise FileNotFoundError(f"{run_dir}: no {checkpoint} checkpoint (looked for {looked} in checkpoints/)")
    path = Path(checkpoint)
    if not (path.is_file() or is_sharded_checkpoint(path)):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a Lightning ``.ckpt`` file or sharded (FSDP) directory
    (``weights_only=True``: no pickle code)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    checkpoint = read_checkpoint(path)
    return checkpoint.get("state_dict", checkpoint)


def load_model(run_dir: str | Path, checkpoint: str = "best", *, trust_config: bool = False
               ) -> tuple[Any, DictConfig]:
    """Rebuild a run's LightningModule from its ``config.yaml`` and load its weights (strictly).

    The whole config (model and data, which callers rebuild next) is first checked by
    :func:`polyfuse.safe_config.check_targets`: a ``_target_`` outside polyfuse / torch / ... raises
    :class:`~polyfuse.errors.UntrustedConfigError` unless ``trust_config=True``.
    """
    import hydra

    from polyfuse.attention import set_default_backend
    from polyfuse.safe_config import check_targets

    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = OmegaConf.load(config_path)
    check_targets(cfg, trusted=trust_config, source=config_path, flag="trust_config=true")
    set_default_backend(cfg.get("attention_backend", "auto"))
    module = hydra.utils.instantiate(cfg.model)
    module.load_state_dict(match_parameter_shapes(load_weights(checkpoint_file(run_dir, checkpoint)), module))
    return module.eval(), cfg

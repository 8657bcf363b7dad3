"""Training run directories: finding them and reading what they recorded, for reports.

The layout of a run directory and how a run's model is rebuilt belong to
:mod:`polyfuse.training.run_dir` (``load_model``, ``checkpoint_file`` and ``load_weights`` are
re-exported here); this module adds what reports read besides: in a Hydra multirun,
``.hydra/overrides.yaml`` and ``.hydra/hydra.yaml`` (the config-group choices), and
``robustness/robustness.csv`` written by ``polyfuse-eval``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from polyfuse.training.run_dir import CONFIG, METRICS, SUMMARY, checkpoint_file, load_model, load_weights

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
        path = self.path / METRICS
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
    summary = json.loads((path / SUMMARY).read_text()) if (path / SUMMARY).is_file() else {}
    config = OmegaConf.to_container(OmegaConf.load(path / CONFIG))
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
    candidates = [root] if (root / CONFIG).is_file() else []
    candidates += [p.parent for p in root.rglob(CONFIG) if p.parent != root and ".hydra" not in p.parts]
    runs = [_read_run(p) for p in candidates if (p / SUMMARY).is_file()]
    if not runs:
        raise FileNotFoundError(f"{root}: no training run found (a run has config.yaml and summary.json)")

    def key(run: Run) -> list[Any]:
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in run.path.relative_to(root).parts]

    return sorted(runs, key=key)

"""Per-sample test predictions of a run (``predictions_<split>.csv``: ``id``, ``label``, ``prediction``),
the input of the paired bootstrap over test samples (:func:`polyfuse.reporting.statistics.bootstrap_predictions`).

A classification run writes nothing per sample while it trains; ``scripts/fusion_tasks.py --predictions``
(or any caller of :func:`write_predictions`) evaluates the run's best checkpoint once and leaves the file
in the run directory, where ``polyfuse-report`` finds it. Two runs are comparable sample by sample when
their files hold the same ids (same data config and pairing seed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["COLUMNS", "predictions_path", "read_predictions", "write_predictions"]

COLUMNS = ["id", "label", "prediction"]


def predictions_path(run_dir: str | Path, split: str = "test") -> Path:
    return Path(run_dir) / f"predictions_{split}.csv"


def write_predictions(run_dir: str | Path, ids: Sequence[str], labels: Sequence[int] | np.ndarray,
                      predictions: Sequence[int] | np.ndarray, split: str = "test") -> Path:
    """Write one row per sample; ``ids``, ``labels`` and ``predictions`` are aligned, length ``N``."""
    if not len(ids) == len(labels) == len(predictions):
        raise ValueError(f"{run_dir}: {len(ids)} ids, {len(labels)} labels and {len(predictions)} predictions; "
                         "one of each per sample expected")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{run_dir}: sample ids repeat on split {split!r}; a paired comparison needs unique ids")
    path = predictions_path(run_dir, split)
    frame = pd.DataFrame({"id": [str(i) for i in ids], "label": np.asarray(labels, dtype=np.int64),
                          "prediction": np.asarray(predictions, dtype=np.int64)})
    frame.to_csv(path, index=False)
    return path


def read_predictions(run_dir: str | Path, split: str = "test") -> pd.DataFrame | None:
    """The run's ``predictions_<split>.csv`` (ids as strings), or ``None`` when it has none."""
    path = predictions_path(run_dir, split)
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"id": str})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} missing; expected {COLUMNS}")
    return frame

"""Per-curve robustness summaries (clean, worst, relative and effective robustness) as a table."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from polyfuse.robustness.metrics import effective_robustness, relative_robustness

__all__ = ["summarise", "mean_curves"]


def mean_curves(records: pd.DataFrame, metric: str, group: Sequence[str] = ()) -> pd.DataFrame:
    """Mean of ``metric`` per ``(*group, perturbation, level)`` (e.g. over seeds)."""
    keys = [*group, "perturbation", "level"]
    return records.groupby(keys, as_index=False, sort=True)[metric].mean()


def summarise(records: pd.DataFrame, metric: str, group: Sequence[str] = (),
              reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per ``(*group, perturbation)`` curve of ``metric`` over ``level``.

    Columns: ``clean`` (level 0), ``worst`` (highest level), ``relative_robustness`` (area under
    the curve) and, when ``reference`` curves are given (columns ``perturbation, level, <metric>``,
    e.g. late fusion's mean curves), ``effective_robustness`` against them on the shared levels.
    """
    rows = []
    for keys, curve in records.groupby([*group, "perturbation"], sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        curve = curve.groupby("level", as_index=False)[metric].mean().sort_values("level")
        levels, values = curve["level"].tolist(), curve[metric].tolist()
        row = dict(zip([*group, "perturbation"], keys))
        row.update(clean=values[0], worst=values[-1], relative_robustness=relative_robustness(levels, values)
                   if len(levels) > 1 else float("nan"))
        if reference is not None:
            ref = reference[reference["perturbation"] == row["perturbation"]].groupby("level")[metric].mean()
            shared = [(v, ref[lv]) for lv, v in zip(levels, values) if lv in ref.index]
            row["effective_robustness"] = (effective_robustness([v for v, _ in shared], [r for _, r in shared])
                                           if shared else float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)

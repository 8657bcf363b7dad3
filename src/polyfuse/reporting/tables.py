"""Run tables: one row per run, mean +- std and 95% CI per variant over seeds, Markdown rendering."""

from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from polyfuse.reporting.runs import Run
from polyfuse.reporting.statistics import format_interval, group_intervals

__all__ = ["IGNORED_OVERRIDES", "varying_overrides", "variant_label", "runs_table", "aggregate", "to_markdown",
           "format_mean_std", "mean_std_strings", "ci_strings"]

# overrides that never distinguish variants (seeds are averaged over; the rest is bookkeeping)
IGNORED_OVERRIDES = ("seed", "task_name", "ckpt_path", "tags")


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def varying_overrides(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value differs between runs (ignoring seeds and bookkeeping), in first-seen
    order with ``model/fusion`` first."""
    values: dict[str, set[str]] = {}
    order: list[str] = []
    for run in runs:
        for override in run.overrides:
            key, value = _split(override)
            if key in IGNORED_OVERRIDES or key.startswith(("hydra.", "paths.")):
                continue
            if key not in values:
                values[key], order = set(), order + [key]
            values[key].add(value)
    counts = {key: sum(any(_split(o)[0] == key for o in run.overrides) for run in runs) for key in order}
    varying = [k for k in order if len(values[k]) > 1 or counts[k] < len(runs)]
    return sorted(varying, key=lambda k: (k != "model/fusion", order.index(k)))


def variant_label(run: Run, keys: Sequence[str]) -> str:
    """``concat``, ``concat, modality_dropout=default``: the run's values of the varying overrides
    (the fusion by name alone); the fusion name when nothing varies."""
    given = dict(_split(o) for o in run.overrides)
    parts = []
    for key in keys:
        if key not in given:
            continue
        parts.append(given[key] if key == "model/fusion" else f"{key.split('/')[-1]}={given[key]}")
    if "model/fusion" not in keys:
        parts.insert(0, run.fusion)
    return ", ".join(parts) if parts else run.fusion


def runs_table(runs: Sequence[Run], root: Any = None) -> pd.DataFrame:
    """One row per run: variant, seed, best validation score, test metrics, epochs, fit time, size and
    the run's command-line overrides."""
    keys = varying_overrides(runs)
    rows = []
    for run in runs:
        summary = run.summary
        row: dict[str, Any] = {"run": str(run.path.relative_to(root)) if root else run.name,
                               "variant": variant_label(run, keys), "fusion": run.fusion, "seed": run.seed}
        if summary.get("monitor"):
            row[f"best {summary['monitor']}"] = summary.get("best_score")
        row.update({key: value for key, value in sorted((summary.get("test") or {}).items())})
        row.update(epochs=summary.get("epochs"), fit_seconds=summary.get("fit_seconds"),
                   parameters=summary.get("num_parameters"), overrides=" ".join(run.overrides))
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate(table: pd.DataFrame, metrics: Sequence[str], by: str = "variant") -> pd.DataFrame:
    """Count, and mean, std, 95% CI bounds (``ci_low`` / ``ci_high``, Student t over seeds; std and CI
    NaN for one run) of ``metrics`` per ``by`` value, in first-seen order."""
    return group_intervals(table, metrics, by=by)


def format_mean_std(mean: float, std: float, digits: int = 4) -> str:
    """``0.9123 ± 0.0042`` (just the mean when std is undefined)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def mean_std_strings(aggregated: pd.DataFrame, metrics: Sequence[str], by: str = "variant",
                     digits: int = 4) -> pd.DataFrame:
    """The aggregate as readable ``mean ± std`` cells (columns ``by``, ``runs``, then ``metrics``)."""
    out = aggregated[[by, "runs"]].copy()
    for metric in metrics:
        if f"{metric} mean" in aggregated.columns:
            out[metric] = [format_mean_std(m, s, digits) for m, s in
                           zip(aggregated[f"{metric} mean"], aggregated[f"{metric} std"])]
    return out


def ci_strings(aggregated: pd.DataFrame, metrics: Sequence[str], digits: int = 4) -> dict[str, list[str]]:
    """``<metric> 95% CI`` -> ``mean ± half-width`` cells, for the metrics ``aggregated`` has CI bounds of."""
    return {f"{metric} 95% CI": [format_interval(m, lo, hi, digits) for m, lo, hi in
                                 zip(aggregated[f"{metric} mean"], aggregated[f"{metric} ci_low"],
                                     aggregated[f"{metric} ci_high"])]
            for metric in metrics if f"{metric} ci_low" in aggregated.columns}


def to_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "–" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"

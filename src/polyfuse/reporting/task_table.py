"""Markdown tables of a variants x tasks sweep over seeds: mean ± 95% CI, differences to a reference
variant, and validation curves (docs/fusions.md "Interaction tasks", ``scripts/fusion_tasks.py``).

Input is one row per finished run with columns ``variant``, ``task``, ``seed``, ``acc`` (test
accuracy in [0, 1]), ``epochs``, ``fit`` (seconds) and ``curve`` (validation accuracy per epoch).
Intervals come from :mod:`polyfuse.reporting.statistics` (Student t over seeds; paired over seeds
for differences when both variants ran the same seeds).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from polyfuse.reporting.statistics import format_interval, pairwise_differences, t_interval

__all__ = ["interval_table", "difference_table", "curve_table"]


def _header(first: str, columns: list[str]) -> list[str]:
    return [f"| {first} | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]


def interval_table(records: pd.DataFrame, tasks: list[str], variants: list[str],
                   limits: Mapping[str, Mapping[str, float]] | None = None) -> list[str]:
    """Rows ``variant | acc % mean ± CI half-width (n seeds)`` per task, then one italic row per limit."""
    lines = _header("variant", tasks)
    for variant in variants:
        cells = []
        for task in tasks:
            values = records[(records["variant"] == variant) & (records["task"] == task)]["acc"].dropna().tolist()
            interval = t_interval(values)
            cells.append("–" if not values else
                         f"{format_interval(interval.mean, interval.low, interval.high, 1, 100)} ({len(values)})")
        lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
    for label, limit in (limits or {}).items():
        lines.append(f"| *{label}* | " + " | ".join(f"*{100 * limit[t]:.1f}*" for t in tasks) + " |")
    return lines


def difference_table(records: pd.DataFrame, tasks: list[str], variants: list[str], reference: str) -> list[str]:
    """Rows: each variant's accuracy minus ``reference``'s per task, in points, with its 95% CI.

    ``(n.s.)`` marks an interval that contains 0. Empty when ``reference`` has no run.
    """
    if reference not in set(records["variant"]):
        return []
    cells: dict[tuple[str, str], str] = {}
    for task in tasks:
        frame = records[records["task"] == task].dropna(subset=["acc"])
        if reference not in set(frame["variant"]) or frame["variant"].nunique() < 2:
            continue
        for row in pairwise_differences(frame, "acc", reference=reference).itertuples():
            if row.ci_low != row.ci_low:  # NaN: fewer than two seeds
                cells[row.a, task] = f"{100 * row.difference:+.1f}"
            else:
                mark = "" if row.distinguishable else " (n.s.)"
                cells[row.a, task] = f"{100 * row.difference:+.1f} [{100 * row.ci_low:+.1f}, {100 * row.ci_high:+.1f}]{mark}"
    shown = [v for v in variants if v != reference and any((v, t) in cells for t in tasks)]
    if not shown:
        return []
    lines = _header("variant", tasks)
    for variant in shown:
        lines.append(f"| `{variant}` | " + " | ".join(cells.get((variant, t), "–") for t in tasks) + " |")
    return lines


def curve_table(records: pd.DataFrame, task: str, variants: list[str], every: int = 1) -> list[str]:
    """Rows: validation accuracy (%) of ``task`` after epochs ``every, 2 every, ...`` (and the last), mean over seeds."""
    curves = records[(records["task"] == task) & records["curve"].map(lambda c: isinstance(c, list) and bool(c))]
    if curves.empty:
        return []
    length = max(map(len, curves["curve"]))
    epochs = sorted({*range(every - 1, length, every), length - 1})
    lines = _header("variant", [str(e + 1) for e in epochs])
    for variant in [v for v in variants if v in set(curves["variant"])]:
        rows = curves[curves["variant"] == variant]["curve"].tolist()
        means = [np.mean([r[e] for r in rows if len(r) > e]) if any(len(r) > e for r in rows) else float("nan")
                 for e in epochs]
        lines.append(f"| `{variant}` | " + " | ".join("–" if m != m else f"{100 * m:.1f}" for m in means) + " |")
    return lines

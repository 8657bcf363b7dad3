"""Robustness curves: metric vs. missing rate / corruption severity, one panel per perturbation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd

__all__ = ["plot_robustness_curves"]


def plot_robustness_curves(records: pd.DataFrame, metric: str, path: str | Path, group: str | None = None,
                           perturbations: Sequence[str] | None = None, title: str | None = None,
                           columns: int = 4) -> Path:
    """Draw ``metric`` over ``level`` for each perturbation (one panel each), one line per ``group``
    value (e.g. fusion). Several rows per (group, perturbation, level) -- seeds -- are drawn as
    mean with a +-1 std band. Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = records if group is not None else records.assign(_group="run")
    group = group or "_group"
    names = list(perturbations) if perturbations is not None else sorted(frame["perturbation"].unique(),
                                                                         key=lambda p: (not p.startswith("missing"), p))
    columns = max(1, min(columns, len(names)))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 2.7 * rows), squeeze=False, sharey=True)
    groups = sorted(frame[group].astype(str).unique())
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(groups)}
    for ax, name in zip(axes.flat, names):
        part = frame[frame["perturbation"] == name]
        stats = part.groupby([group, "level"])[metric].agg(["mean", "std"]).reset_index()
        for label, curve in stats.groupby(group):
            curve = curve.sort_values("level")
            colour = colours[str(label)]
            ax.plot(curve["level"], curve["mean"], marker="o", markersize=2.5, linewidth=1.4, color=colour,
                    label=str(label))
            if curve["std"].notna().any():
                std = curve["std"].fillna(0.0)
                ax.fill_between(curve["level"], curve["mean"] - std, curve["mean"] + std, color=colour, alpha=0.15)
        kind, _, what = name.partition(":")
        ax.set_title(f"{what} missing" if kind == "missing" else f"{kind}: {what}", fontsize=9)
        ax.set_xlabel("missing rate" if kind == "missing" else "severity", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel(metric, fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    if len(groups) > 1 or group != "_group":
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize=8,
                   bbox_to_anchor=(0.5, 1.0), frameon=False)
    if title:
        fig.suptitle(title, y=1.04 if len(groups) > 1 else 1.0, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95 if len(groups) > 1 else 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path

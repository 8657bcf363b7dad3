"""Report figures: learning curves per variant and a metric-per-variant bar chart (matplotlib, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from polyfuse.reporting.runs import Run

__all__ = ["plot_learning_curves", "plot_metric_bars"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(runs: Sequence[Run], labels: Sequence[str], path: str | Path,
                         metrics: Sequence[str] = ("val/acc", "val/loss", "train/loss")) -> Path | None:
    """One panel per metric of ``metrics.csv`` over epochs, one line per variant (mean over its
    runs, +-1 std band). ``labels[i]`` is the variant of ``runs[i]``. None when no run has history."""
    frames = []
    for run, label in zip(runs, labels):
        history = run.history()
        if not history.empty:
            frames.append(history.assign(variant=label, run=run.name))
    if not frames:
        return None
    history = pd.concat(frames, ignore_index=True)
    metrics = [m for m in metrics if m in history.columns and history[m].notna().any()]
    if not metrics:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    variants = list(dict.fromkeys(labels))
    colours = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
    for ax, metric in zip(axes[0], metrics):
        stats = history.dropna(subset=[metric]).groupby(["variant", "epoch"])[metric].agg(["mean", "std"]).reset_index()
        for variant in variants:
            curve = stats[stats["variant"] == variant].sort_values("epoch")
            if curve.empty:
                continue
            ax.plot(curve["epoch"], curve["mean"], color=colours[variant], linewidth=1.4, label=variant)
            std = curve["std"].fillna(0)
            ax.fill_between(curve["epoch"], curve["mean"] - std, curve["mean"] + std, color=colours[variant], alpha=0.15)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_metric_bars(aggregated: pd.DataFrame, metrics: Sequence[str], path: str | Path,
                     by: str = "variant") -> Path | None:
    """Grouped bars of ``<metric> mean`` per variant with error bars over seeds: the 95% CI when
    ``aggregated`` has ``<metric> ci_low`` / ``ci_high`` (:func:`~polyfuse.reporting.tables.aggregate`), else the std."""
    metrics = [m for m in metrics if f"{m} mean" in aggregated.columns]
    if not metrics or aggregated.empty:
        return None
    with_ci = all(f"{m} ci_low" in aggregated.columns for m in metrics)

    def error(metric: str) -> pd.Series:
        if with_ci:
            return ((aggregated[f"{metric} ci_high"] - aggregated[f"{metric} ci_low"]) / 2).fillna(0.0)
        return aggregated[f"{metric} std"].fillna(0.0)

    plt = _pyplot()
    variants = aggregated[by].astype(str).tolist()
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(variants) * max(1, len(metrics) / 2)), 3.8))
    for i, metric in enumerate(metrics):
        positions = [x + (i - (len(metrics) - 1) / 2) * width for x in range(len(variants))]
        means = aggregated[f"{metric} mean"]
        bars = ax.bar(positions, means, width, yerr=error(metric), capsize=3, label=metric)
        ax.bar_label(bars, labels=[f"{m:.3f}" for m in means], fontsize=7, padding=2)
    ax.set_xticks(range(len(variants)), variants, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(metrics[0] if len(metrics) == 1 else "metric")
    low = min(float((aggregated[f"{m} mean"] - error(m)).min()) for m in metrics)
    high = max(float((aggregated[f"{m} mean"] + error(m)).max()) for m in metrics)
    ax.set_ylim(max(0.0, low - 0.1 * (high - low + 1e-6)), high + 0.12 * (high - low + 1e-6))
    ax.grid(axis="y", alpha=0.3)
    if len(metrics) > 1:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=len(metrics), frameon=False)
    ax.set_title("mean ± 95% CI over seeds" if with_ci else "mean ± std over seeds", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

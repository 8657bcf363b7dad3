"""Statistics of multi-seed results: mean, std and Student-t confidence intervals per group, and
confidence intervals of pairwise differences (over seeds, or a paired bootstrap over test samples).

A group's runs differ only by their seed. With ``n`` runs the interval is
``mean ± t_{(1+c)/2, n-1} · std / sqrt(n)`` (std with ``ddof=1``); it is undefined (NaN) for one run.
Two groups evaluated on the same seeds are compared by a paired t-interval on the per-seed
differences; otherwise by Welch's interval. A pair is *distinguishable* when the interval of the
difference excludes 0. With 3 seeds ``t_{0.975, 2} = 4.30``: only large gaps separate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["Interval", "t_interval", "difference_interval", "bootstrap_difference", "bootstrap_predictions",
           "bootstrap_comparisons", "group_intervals", "pairwise_differences", "format_interval"]


@dataclass(frozen=True)
class Interval:
    """``mean`` and its ``confidence`` interval ``[low, high]`` from ``n`` values (NaN bounds when n < 2)."""

    mean: float
    std: float
    n: int
    low: float
    high: float
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def excludes_zero(self) -> bool:
        return not (math.isnan(self.low) or self.low <= 0.0 <= self.high)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean of ``values`` (NaN entries dropped)."""
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(data)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan, math.nan, confidence)
    mean = float(data.mean())
    if n < 2:
        return Interval(mean, math.nan, 1, math.nan, math.nan, confidence)
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean, std, n, mean - half, mean + half, confidence)


def difference_interval(a: Sequence[float], b: Sequence[float], paired: bool,
                        confidence: float = 0.95) -> Interval:
    """Interval of ``mean(a) - mean(b)``: paired t (``a[i]``, ``b[i]`` share seed ``i``) or Welch."""
    a_values, b_values = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired:
        if len(a_values) != len(b_values):
            raise ValueError(f"a paired difference needs as many values on each side ({len(a_values)} vs {len(b_values)})")
        return t_interval((a_values - b_values).tolist(), confidence)
    na, nb = len(a_values), len(b_values)
    mean = float(a_values.mean() - b_values.mean()) if na and nb else math.nan
    if na < 2 or nb < 2:
        return Interval(mean, math.nan, na + nb, math.nan, math.nan, confidence)
    va, vb = a_values.var(ddof=1) / na, b_values.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Interval(mean, 0.0, na + nb, mean, mean, confidence)
    dof = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, dof)) * se
    return Interval(mean, se, na + nb, mean - half, mean + half, confidence)


def bootstrap_difference(correct_a: Sequence[float], correct_b: Sequence[float], resamples: int = 2000,
                         confidence: float = 0.95, seed: int = 0) -> Interval:
    """Paired bootstrap over test samples: percentile interval of ``mean(a) - mean(b)``.

    ``correct_a[i]`` / ``correct_b[i]``: per-sample scores (e.g. 0/1 correctness) of two models on
    the same test sample ``i`` (Efron & Tibshirani 1993; Koehn 2004 for paired comparisons).
    """
    a_values, b_values = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a_values.shape != b_values.shape or a_values.ndim != 1:
        raise ValueError(f"paired bootstrap needs two equal-length 1-d arrays, got {a_values.shape} and {b_values.shape}")
    differences = a_values - b_values
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), (resamples, len(differences)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(differences.mean()), float(means.std(ddof=1)), len(differences), float(low), float(high),
                    confidence)


def _correct_by_id(predictions: pd.DataFrame, name: str) -> pd.Series:
    """Each sample's correctness (``prediction == label``) by id, averaged over the stacked runs (seeds)."""
    labels = predictions.groupby("id")["label"].nunique()
    if (labels > 1).any():
        raise ValueError(f"{name}: sample {labels[labels > 1].index[0]!r} has different labels in different runs")
    return (predictions["prediction"] == predictions["label"]).astype(float).groupby(predictions["id"]).mean()


def bootstrap_predictions(a: pd.DataFrame, b: pd.DataFrame, resamples: int = 2000, confidence: float = 0.95,
                          seed: int = 0, names: tuple[str, str] = ("a", "b")) -> Interval:
    """Paired bootstrap over test samples of ``accuracy(a) - accuracy(b)`` from per-sample predictions.

    ``a`` / ``b``: columns ``id``, ``label``, ``prediction`` (:mod:`polyfuse.reporting.predictions`); the
    runs of one variant (its seeds) may be stacked, each sample's correctness is then their mean. Both
    sides must hold the same ids: the same test samples, compared sample by sample.
    """
    correct_a, correct_b = _correct_by_id(a, names[0]), _correct_by_id(b, names[1])
    if set(correct_a.index) != set(correct_b.index):
        only = sorted(set(correct_a.index) ^ set(correct_b.index))
        raise ValueError(f"{names[0]} and {names[1]} were evaluated on different test samples ({len(only)} ids "
                         f"in one only, e.g. {only[0]!r}): a paired bootstrap needs the same ids")
    order = sorted(correct_a.index)
    return bootstrap_difference(correct_a[order].to_numpy(), correct_b[order].to_numpy(), resamples, confidence, seed)


def bootstrap_comparisons(predictions: dict[str, pd.DataFrame], reference: str | None = None, resamples: int = 2000,
                          confidence: float = 0.95) -> pd.DataFrame:
    """:func:`bootstrap_predictions` for every pair of variants (or each against ``reference``).

    ``predictions``: variant -> its runs' stacked predictions. Columns as :func:`pairwise_differences`.
    """
    names = list(predictions)
    pairs = ([(n, reference) for n in names if n != reference] if reference in predictions
             else list(combinations(names, 2)))
    rows = []
    for a, b in pairs:
        interval = bootstrap_predictions(predictions[a], predictions[b], resamples, confidence, names=(a, b))
        runs = f"{predictions[a]['id'].size // max(interval.n, 1)} vs {predictions[b]['id'].size // max(interval.n, 1)}"
        rows.append({"a": a, "b": b, "difference": interval.mean, "ci_low": interval.low, "ci_high": interval.high,
                     "test": f"paired bootstrap over {interval.n} test samples", "runs": runs,
                     "distinguishable": interval.excludes_zero})
    return pd.DataFrame(rows, columns=["a", "b", "difference", "ci_low", "ci_high", "test", "runs", "distinguishable"])


def group_intervals(table: pd.DataFrame, metrics: Sequence[str], by: str | Sequence[str] = "variant",
                    confidence: float = 0.95) -> pd.DataFrame:
    """Per ``by`` value (one column or several; first-seen order): ``runs`` and, per metric, ``mean``,
    ``std``, ``ci_low``, ``ci_high``."""
    keys = [by] if isinstance(by, str) else list(by)
    rows = []
    for group, frame in table.groupby(keys, sort=False):
        row: dict[str, object] = {**dict(zip(keys, group)), "runs": len(frame)}
        for metric in (m for m in metrics if m in table.columns):
            interval = t_interval(frame[metric].astype(float).tolist(), confidence)
            row.update({f"{metric} mean": interval.mean, f"{metric} std": interval.std,
                        f"{metric} ci_low": interval.low, f"{metric} ci_high": interval.high})
        rows.append(row)
    return pd.DataFrame(rows)


def pairwise_differences(table: pd.DataFrame, metric: str, by: str = "variant", seed: str = "seed",
                         reference: str | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """The difference of ``metric`` between groups: every pair, or each group against ``reference``.

    Paired over seeds when both groups ran exactly the same seeds (each once), else Welch.
    Columns: ``a``, ``b``, ``difference``, ``ci_low``, ``ci_high``, ``test``, ``distinguishable``.
    """
    groups = {name: frame.dropna(subset=[metric]) for name, frame in table.groupby(by, sort=False)}
    names = list(groups)
    if reference is not None and reference in groups:
        pairs = [(name, reference) for name in names if name != reference]
    else:
        pairs = list(combinations(names, 2))
    rows = []
    for a, b in pairs:
        fa, fb = groups[a], groups[b]
        seeds_a, seeds_b = fa[seed].tolist() if seed in fa else [], fb[seed].tolist() if seed in fb else []
        paired = (len(seeds_a) > 1 and sorted(seeds_a) == sorted(seeds_b) and len(set(seeds_a)) == len(seeds_a))
        if paired:
            fa, fb = fa.sort_values(seed), fb.sort_values(seed)
        interval = difference_interval(fa[metric].astype(float).tolist(), fb[metric].astype(float).tolist(),
                                       paired, confidence)
        rows.append({"a": a, "b": b, "difference": interval.mean, "ci_low": interval.low, "ci_high": interval.high,
                     "test": "paired t over seeds" if paired else "Welch t", "runs": f"{len(fa)} vs {len(fb)}",
                     "distinguishable": interval.excludes_zero})
    return pd.DataFrame(rows, columns=["a", "b", "difference", "ci_low", "ci_high", "test", "runs", "distinguishable"])


def format_interval(mean: float, low: float, high: float, digits: int = 4, scale: float = 1.0) -> str:
    """``0.8200 ± 0.2541`` (the CI half-width; just the mean when the interval is undefined)."""
    if mean is None or math.isnan(mean):
        return "–"
    if low is None or math.isnan(low):
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * (high - low) / 2:.{digits}f}"

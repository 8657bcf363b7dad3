"""Multi-seed statistics: t intervals against scipy, paired / Welch differences, the paired bootstrap,
and ``polyfuse-report`` on synthetic run directories (3 variants x 3 seeds) giving CIs and comparisons."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from polyfuse.reporting import build_report
from polyfuse.reporting.statistics import (bootstrap_comparisons, bootstrap_difference, bootstrap_predictions,
                                           difference_interval, format_interval,
                                           pairwise_differences, t_interval)


def test_t_interval_matches_scipy_and_is_undefined_for_one_value() -> None:
    values = [0.81, 0.84, 0.80, 0.86]
    interval = t_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert (interval.low, interval.high) == pytest.approx((low, high))
    assert interval.std == pytest.approx(np.std(values, ddof=1)) and interval.n == 4
    single = t_interval([0.5])
    assert single.mean == 0.5 and math.isnan(single.low) and not single.excludes_zero
    assert format_interval(single.mean, single.low, single.high) == "0.5000"
    assert format_interval(0.5, 0.4, 0.6, digits=1, scale=100) == "50.0 ± 10.0"


def test_difference_intervals_match_scipy_paired_and_welch() -> None:
    a, b = [0.90, 0.85, 0.88], [0.80, 0.79, 0.81]
    paired = difference_interval(a, b, paired=True)
    expected = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (paired.low, paired.high) == pytest.approx((expected.low, expected.high))
    welch = difference_interval(a, b, paired=False)
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (welch.low, welch.high) == pytest.approx((expected.low, expected.high))
    assert paired.excludes_zero and welch.mean == pytest.approx(np.mean(a) - np.mean(b))


def test_paired_bootstrap_over_test_samples() -> None:
    rng = np.random.default_rng(0)
    a = (rng.random(400) < 0.9).astype(float)
    same = bootstrap_difference(a, a)
    assert same.low == same.high == 0.0 and not same.excludes_zero
    worse = np.where(rng.random(400) < 0.3, 0.0, a)  # b is a with ~30% of its correct answers flipped
    better = bootstrap_difference(a, worse)
    assert better.excludes_zero and better.low > 0.1
    assert bootstrap_difference(a, worse, seed=1).mean == better.mean
    with pytest.raises(ValueError, match="equal-length"):
        bootstrap_difference(a, a[:-1])


def test_pairwise_differences_pair_by_seed_and_mark_indistinguishable_pairs() -> None:
    table = pd.DataFrame({"variant": ["x"] * 3 + ["y"] * 3 + ["z"] * 2, "seed": [0, 1, 2, 2, 1, 0, 0, 1],
                          "acc": [0.90, 0.50, 0.70, 0.67, 0.48, 0.88, 0.20, 0.22]})
    result = pairwise_differences(table, "acc").set_index(["a", "b"])
    xy = result.loc[("x", "y")]
    assert xy["test"] == "paired t over seeds" and xy["difference"] == pytest.approx(0.07 / 3)
    assert xy["distinguishable"]  # seed-wise x is always 0.02-0.03 higher, though the seeds spread 0.5-0.9
    assert result.loc[("x", "z"), "test"] == "Welch t" and not result.loc[("x", "z"), "distinguishable"]
    against = pairwise_differences(table, "acc", reference="y")
    assert list(zip(against["a"], against["b"])) == [("x", "y"), ("z", "y")]


VARIANTS = {"concat": [0.80, 0.84, 0.82], "late": [0.60, 0.62, 0.61], "tensor": [0.83, 0.79, 0.84]}


def write_run(path: Path, fusion: str, seed: int, acc: float) -> None:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model/fusion={fusion}", f"seed={seed}"]))
    (path / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "model": {"fusion": {"_target_": fusion}}}))
    (path / "summary.json").write_text(json.dumps({"monitor": "val/acc", "best_score": acc, "epochs": 2,
                                                   "fit_seconds": 1.0, "test": {"test/acc": acc}}))


def test_report_gives_ci_per_variant_and_comparisons(tmp_path: Path) -> None:
    for number, (fusion, seed) in enumerate((f, s) for f in VARIANTS for s in range(3)):
        write_run(tmp_path / "sweep" / str(number), fusion, seed, VARIANTS[fusion][seed])
    report = build_report(tmp_path / "sweep", reference="late")
    summary = report.summary.set_index("variant")
    interval = t_interval(VARIANTS["concat"])
    assert summary.loc["concat", "runs"] == 3
    assert summary.loc["concat", ["test/acc ci_low", "test/acc ci_high"]].tolist() == pytest.approx(
        [interval.low, interval.high])
    comparisons = pd.read_csv(report.files["comparisons.csv"]).set_index("a")
    assert set(comparisons["b"]) == {"late"}
    assert comparisons.loc["concat", "distinguishable"] and comparisons.loc["tensor", "distinguishable"]
    markdown = report.files["summary.md"].read_text()
    assert f"| concat | 3 | 0.8200 ± {interval.std:.4f} | 0.8200 ± {interval.half_width:.4f} |" in markdown
    all_pairs = pd.read_csv(build_report(tmp_path / "sweep", out_dir=tmp_path / "r2", reference=None
                                         ).files["comparisons.csv"])
    tensor_concat = all_pairs[(all_pairs["a"] == "concat") & (all_pairs["b"] == "tensor")].iloc[0]
    assert not tensor_concat["distinguishable"]


def test_group_intervals_over_several_keys() -> None:
    """Robustness summaries group by (variant, perturbation): one interval per pair of keys."""
    from polyfuse.reporting.statistics import group_intervals

    table = pd.DataFrame({"variant": ["a", "a", "a", "a"], "perturbation": ["x", "x", "y", "y"],
                          "worst": [0.1, 0.3, 0.5, 0.5]})
    result = group_intervals(table, ["worst"], by=["variant", "perturbation"]).set_index("perturbation")
    assert result.loc["x", ["worst ci_low", "worst ci_high"]].tolist() == pytest.approx(
        [t_interval([0.1, 0.3]).low, t_interval([0.1, 0.3]).high])
    assert result.loc["y", "worst ci_low"] == result.loc["y", "worst ci_high"] == 0.5


def test_metric_bars_show_the_ci_half_width(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.axes import Axes

    from polyfuse.reporting.plots import plot_metric_bars
    from polyfuse.reporting.tables import aggregate

    drawn = {}
    original = Axes.bar

    def spy(self, x, height, *args, **kwargs):
        drawn["yerr"] = list(kwargs["yerr"])
        return original(self, x, height, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", spy)
    table = pd.DataFrame({"variant": ["a"] * 3 + ["b"] * 3, "acc": [0.80, 0.84, 0.82, 0.5, 0.6, 0.7]})
    assert plot_metric_bars(aggregate(table, ["acc"]), ["acc"], tmp_path / "bars.png").is_file()
    assert drawn["yerr"] == pytest.approx([t_interval([0.80, 0.84, 0.82]).half_width, t_interval([0.5, 0.6, 0.7]).half_width])


def _predictions(correct: list[int], seed_offset: int = 0) -> pd.DataFrame:
    """Synthetic predictions of 10-class samples ``s0, s1, ...``: right where ``correct`` is 1."""
    labels = [(i + seed_offset) % 10 for i in range(len(correct))]
    return pd.DataFrame({"id": [f"s{i}" for i in range(len(correct))], "label": labels,
                         "prediction": [lab if c else (lab + 1) % 10 for lab, c in zip(labels, correct)]})


def test_bootstrap_predictions_pairs_samples_by_id_and_averages_seeds() -> None:
    rng = np.random.default_rng(0)
    good = rng.random(400) < 0.9
    bad = rng.random(400) < 0.5
    a, b = _predictions(good.astype(int).tolist()), _predictions(bad.astype(int).tolist())
    interval = bootstrap_predictions(a, b.sample(frac=1.0, random_state=0))  # row order does not matter: ids pair
    assert interval.mean == pytest.approx(good.mean() - bad.mean()) and interval.n == 400
    assert interval.low > 0 and interval.excludes_zero
    # two seeds of `a` stacked: each sample's correctness is their mean
    worse = _predictions([0] * 400)
    stacked = bootstrap_predictions(pd.concat([a, worse]), b)
    assert stacked.mean == pytest.approx((good.mean() + 0.0) / 2 - bad.mean())
    with pytest.raises(ValueError, match="different test samples"):
        bootstrap_predictions(a, b.iloc[:-1])
    with pytest.raises(ValueError, match="different labels"):
        bootstrap_predictions(pd.concat([a, _predictions([1] * 400, seed_offset=1)]), b)


def test_bootstrap_comparisons_against_a_reference() -> None:
    same = _predictions([1, 0] * 100)
    table = bootstrap_comparisons({"late": same, "concat": _predictions([1] * 200), "copy": same.copy()},
                                  reference="late")
    assert list(table["a"]) == ["concat", "copy"] and set(table["b"]) == {"late"}
    assert table.set_index("a").loc["concat", "difference"] == pytest.approx(0.5)
    assert list(table["distinguishable"]) == [True, False]
    assert table["test"].iloc[0] == "paired bootstrap over 200 test samples"
    assert len(bootstrap_comparisons({"x": same, "y": same, "z": same})) == 3  # every pair without a reference


def test_report_bootstraps_over_test_samples_where_runs_left_predictions(tmp_path: Path) -> None:
    """Variants whose every run wrote predictions_test.csv are compared sample by sample; one without
    predictions, or evaluated on other ids, is left out of the bootstrap table (not of the t comparisons)."""
    from polyfuse.reporting.predictions import read_predictions, write_predictions

    rng = np.random.default_rng(1)
    for number, (fusion, seed) in enumerate((f, s) for f in VARIANTS for s in range(3)):
        path = tmp_path / "sweep" / str(number)
        write_run(path, fusion, seed, VARIANTS[fusion][seed])
        if fusion != "tensor":
            frame = _predictions((rng.random(300) < VARIANTS[fusion][seed]).astype(int).tolist())
            write_predictions(path, frame["id"].tolist(), frame["label"], frame["prediction"])
            assert read_predictions(path).equals(frame)
    report = build_report(tmp_path / "sweep", reference="late")
    bootstrap = pd.read_csv(report.files["comparisons_bootstrap.csv"])
    assert list(zip(bootstrap["a"], bootstrap["b"])) == [("concat", "late")]
    row = bootstrap.iloc[0]
    assert row["distinguishable"] and row["ci_low"] < row["difference"] < row["ci_high"]
    assert row["test"] == "paired bootstrap over 300 test samples" and row["runs"] == "3 vs 3"
    assert "paired bootstrap over test samples" in report.files["summary.md"].read_text()
    assert read_predictions(tmp_path / "sweep" / "6") is None  # tensor's runs wrote none
    with pytest.raises(ValueError, match="ids repeat"):
        write_predictions(tmp_path, ["a", "a"], [0, 1], [0, 1])

"""Build the comparison report of a multirun: tables (CSV, Markdown, HTML) and figures (PNG).

``build_report(<multirun dir>)`` writes into ``<multirun dir>/report/`` (or ``out_dir``):

* ``runs.csv`` -- one row per run (variant, seed, test metrics, best validation score, time, size);
* ``summary.csv`` / ``summary.md`` -- mean, std and 95% confidence interval (Student t) over seeds
  per variant;
* ``comparisons.csv`` -- the primary metric's difference between variants (each against
  ``reference``, else every pair) with its 95% CI, paired over seeds where the seeds match, and
  whether the pair is distinguishable (:mod:`polyfuse.reporting.statistics`);
* ``comparisons_bootstrap.csv`` -- where runs left per-sample test predictions (``predictions_test.csv``,
  :mod:`polyfuse.reporting.predictions`): the same differences by a paired bootstrap over the test samples
  (each sample's correctness averaged over a variant's seeds), between variants with the same test ids;
* ``learning_curves.png``, ``metric_by_variant.png``;
* with ``polyfuse-eval`` results: ``robustness.csv`` (every curve point of every run),
  ``robustness_summary.csv`` (relative / effective robustness per variant and perturbation,
  mean +- std over seeds), ``robustness_missing.png``, ``robustness_corruptions.png``;
* ``index.html`` -- all of the above in one self-contained page.

A *variant* is a run's values of the overrides that differ between runs, seeds excluded
(``concat``, ``concat, modality_dropout=default``); runs of a variant are its seeds.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from polyfuse.reporting.html import figure_html, table_html, write_page
from polyfuse.reporting.plots import plot_learning_curves, plot_metric_bars
from polyfuse.reporting.predictions import read_predictions
from polyfuse.reporting.runs import Run, find_runs
from polyfuse.reporting.statistics import bootstrap_comparisons, group_intervals, pairwise_differences
from polyfuse.reporting.tables import (aggregate, ci_strings, format_mean_std, mean_std_strings, runs_table,
                                       to_markdown, varying_overrides)
from polyfuse.robustness.plots import plot_robustness_curves
from polyfuse.robustness.summary import mean_curves, summarise

__all__ = ["Report", "build_report", "robustness_records"]


@dataclass
class Report:
    """Paths of everything a report wrote."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    robustness: pd.DataFrame = field(default_factory=pd.DataFrame)


def robustness_records(runs: Sequence[Run], labels: Sequence[str]) -> pd.DataFrame:
    """All runs' ``robustness.csv`` rows with ``variant``, ``run`` and ``seed`` columns."""
    frames = [run.robustness().assign(variant=label, run=run.name, seed=run.seed)
              for run, label in zip(runs, labels)]
    frames = [f for f in frames if "perturbation" in f.columns]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _default_metric(runs: Sequence[Run]) -> str:
    monitor = next((r.summary.get("monitor") for r in runs if r.summary.get("monitor")), "val/acc")
    name = str(monitor).split("/", 1)[-1]
    tests = [k for r in runs for k in (r.summary.get("test") or {})]
    return f"test/{name}" if f"test/{name}" in tests else (tests[0] if tests else str(monitor))


def _robustness_summary(records: pd.DataFrame, metric: str, reference: str | None) -> pd.DataFrame:
    """Per run summaries (effective robustness against the reference variant's mean curves),
    then mean, std and 95% CI over each variant's runs."""
    ref_curves = None
    if reference is not None and reference in set(records["variant"]):
        ref_curves = mean_curves(records[records["variant"] == reference], metric)
    per_run = summarise(records, metric, group=["variant", "run"], reference=ref_curves)
    values = [c for c in ("clean", "worst", "relative_robustness", "effective_robustness") if c in per_run.columns]
    return group_intervals(per_run, values, by=["variant", "perturbation"]).drop(columns="runs")


def _pivot(summary: pd.DataFrame, value: str, variants: Sequence[str]) -> pd.DataFrame:
    """Rows: perturbations (missing modalities first); columns: variants; cells ``mean ± std`` of ``value``."""
    cells = summary.assign(cell=[format_mean_std(m, s, 3) for m, s in
                                 zip(summary[f"{value} mean"], summary[f"{value} std"])])
    table = cells.pivot(index="perturbation", columns="variant", values="cell")
    order = sorted(table.index, key=lambda p: (not p.startswith("missing"), p.count("+"), p))
    table = table.reindex(index=order, columns=[v for v in variants if v in table.columns])
    table.columns.name = None
    return table.reset_index()


def _comparisons(table: pd.DataFrame, metric: str, reference: str | None, variants: Sequence[str]) -> pd.DataFrame:
    """Differences of ``metric`` between variants (against ``reference`` when it is one, else all pairs)."""
    if len(variants) < 2 or metric not in table.columns:
        return pd.DataFrame()
    return pairwise_differences(table, metric, reference=reference if reference in variants else None)


def _bootstrap_comparisons(runs: Sequence[Run], labels: Sequence[str], reference: str | None) -> pd.DataFrame:
    """Paired bootstrap over test samples between variants whose every run wrote ``predictions_test.csv``,
    for each set of variants evaluated on the same test ids (against ``reference`` when among them)."""
    stacked: dict[str, list[pd.DataFrame | None]] = {}
    for run, label in zip(runs, labels):
        stacked.setdefault(label, []).append(read_predictions(run.path))
    same_ids: dict[frozenset[str], dict[str, pd.DataFrame]] = {}
    for variant, frames in stacked.items():
        if all(frame is not None for frame in frames):
            joined = pd.concat(frames, ignore_index=True)
            same_ids.setdefault(frozenset(joined["id"]), {})[variant] = joined
    tables = [bootstrap_comparisons(group, reference if reference in group else None)
              for group in same_ids.values() if len(group) > 1]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _readable_comparisons(comparisons: pd.DataFrame) -> pd.DataFrame:
    cells = comparisons[["a", "b", "difference", "ci_low", "ci_high", "test", "runs"]].copy()
    cells["distinguishable"] = ["yes" if d else "no (CI contains 0)" for d in comparisons["distinguishable"]]
    return cells


def build_report(root: str | Path, out_dir: str | Path | None = None, metric: str | None = None,
                 reference: str | None = "late", title: str | None = None) -> Report:
    """Collect every run under ``root`` and write the report (see module docstring)."""
    root = Path(root)
    runs = find_runs(root)
    out = Path(out_dir) if out_dir is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir=out)

    table = runs_table(runs, root)
    labels = table["variant"].tolist()
    variants = list(dict.fromkeys(labels))
    metric = metric or _default_metric(runs)
    metrics = [metric] + [c for c in table.columns if "/" in c and c != metric]
    summary = aggregate(table, metrics + ["fit_seconds"])
    name = metric.split("/")[-1]
    headline = [metric] + [c for c in metrics[1:] if c.split("/")[-1] == name]  # the metric on every split
    readable = mean_std_strings(summary, headline)
    for offset, (column, cells) in enumerate(ci_strings(summary, [metric]).items()):
        readable.insert(3 + offset, column, cells)  # beside the primary metric's mean ± std
    readable["fit time (s)"] = mean_std_strings(summary, ["fit_seconds"], digits=1)["fit_seconds"]
    report.runs, report.summary = table, summary
    report.files["runs.csv"] = out / "runs.csv"
    table.to_csv(report.files["runs.csv"], index=False)
    report.files["summary.csv"] = out / "summary.csv"
    summary.to_csv(report.files["summary.csv"], index=False)
    comparisons = _comparisons(table, metric, reference, variants)
    if not comparisons.empty:
        report.files["comparisons.csv"] = out / "comparisons.csv"
        comparisons.to_csv(report.files["comparisons.csv"], index=False)
    bootstrap = _bootstrap_comparisons(runs, labels, reference)
    if not bootstrap.empty:
        report.files["comparisons_bootstrap.csv"] = out / "comparisons_bootstrap.csv"
        bootstrap.to_csv(report.files["comparisons_bootstrap.csv"], index=False)

    figures: list[tuple[str, Path]] = []
    tested = [c for c in headline if c.split("/")[0].startswith("test")] or [metric]
    bars = plot_metric_bars(summary, tested, out / "metric_by_variant.png")
    if bars:
        figures.append((f"{name} per variant on {', '.join(c.split('/')[0] for c in tested)} "
                        "(mean ± 95% CI over seeds)", bars))
    curves = plot_learning_curves(runs, labels, out / "learning_curves.png")
    if curves:
        figures.append(("Learning curves (mean ± std over seeds)", curves))

    records = robustness_records(runs, labels)
    robustness_tables: list[tuple[str, pd.DataFrame]] = []
    if not records.empty:
        rmetric = metric.split("/")[-1] if metric.split("/")[-1] in records.columns else "acc"
        report.robustness = records
        report.files["robustness.csv"] = out / "robustness.csv"
        records.to_csv(report.files["robustness.csv"], index=False)
        rsummary = _robustness_summary(records, rmetric, reference)
        report.files["robustness_summary.csv"] = out / "robustness_summary.csv"
        rsummary.to_csv(report.files["robustness_summary.csv"], index=False)
        robustness_tables.append((f"Relative robustness (area under the {rmetric} curve, mean ± std over seeds)",
                                  _pivot(rsummary, "relative_robustness", variants)))
        if "effective_robustness mean" in rsummary.columns:
            robustness_tables.append((f"Effective robustness vs. {reference} (sum over levels of the gain over "
                                      f"{reference}'s curve shifted to the same clean {rmetric})",
                                      _pivot(rsummary, "effective_robustness", variants)))
        missing = sorted(p for p in records["perturbation"].unique() if p.startswith("missing:"))
        corruptions = sorted(p for p in records["perturbation"].unique() if not p.startswith("missing:"))
        for name, chosen, caption in (("robustness_missing.png", missing, "missing modalities"),
                                      ("robustness_corruptions.png", corruptions, "corrupted modalities")):
            if chosen:
                path = plot_robustness_curves(records, rmetric, out / name, group="variant", perturbations=chosen,
                                              title=f"{rmetric} under {caption}")
                figures.append((f"Robustness: {rmetric} under {caption} (mean ± std over seeds)", path))
    report.files.update({path.name: path for _, path in figures})

    title = title or f"polyfuse report: {root.name}"
    varying = set(varying_overrides(runs))
    common = sorted({o for r in runs for o in r.overrides if o.partition("=")[0].lstrip("+~") not in varying})
    meta = (f"{len(runs)} runs, {len(variants)} variants, from {root}. Primary metric: {metric}. "
            f"Varying: {', '.join(varying_overrides(runs)) or '-'}; seeds: "
            f"{', '.join(sorted({str(r.seed) for r in runs}))}.")
    comparison_heading = (f"Differences in {metric} (a - b, 95% CI; paired t over seeds where both ran the same "
                          "seeds, else Welch)")
    markdown = [f"# {title}\n", f"{meta}\n", "## Summary (mean ± std and 95% CI over seeds)\n", to_markdown(readable)]
    bootstrap_heading = ("Differences in test accuracy (a - b, 95% CI; paired bootstrap over test samples, "
                         "each sample's correctness averaged over the seeds)")
    if not comparisons.empty:
        markdown += [f"## {comparison_heading}\n", to_markdown(_readable_comparisons(comparisons))]
    if not bootstrap.empty:
        markdown += [f"## {bootstrap_heading}\n", to_markdown(_readable_comparisons(bootstrap))]
    for heading, frame in robustness_tables:
        markdown += [f"## {heading}\n", to_markdown(frame)]
    markdown += ["## Figures\n"] + [f"![{caption}]({path.name})\n" for caption, path in figures]
    markdown += ["## Runs\n", to_markdown(table.drop(columns=["overrides"])), "Overrides of each run: `runs.csv`.\n"]
    report.files["summary.md"] = out / "summary.md"
    report.files["summary.md"].write_text("\n".join(markdown))

    sections = [("Summary (mean ± std and 95% CI over seeds)", table_html(readable))]
    if not comparisons.empty:
        sections.append((comparison_heading, table_html(_readable_comparisons(comparisons))))
    if not bootstrap.empty:
        sections.append((bootstrap_heading, table_html(_readable_comparisons(bootstrap))))
    sections += [(heading, table_html(frame)) for heading, frame in robustness_tables]
    sections += [("Figures", "\n".join(figure_html(path, caption) for caption, path in figures))]
    sections += [("Runs", table_html(table))]
    if common:
        sections.append(("Overrides shared by every run",
                         "<p>" + ", ".join(f"<code>{html.escape(o)}</code>" for o in common) + "</p>"))
    report.files["index.html"] = write_page(out / "index.html", title, sections, meta)
    return report


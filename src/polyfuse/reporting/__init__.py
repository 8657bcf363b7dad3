"""Comparison reports of training runs: run tables, mean +- std over seeds, figures, HTML.

>>> from polyfuse.reporting import build_report
>>> report = build_report("outputs/avdigits_fusions/multiruns/2025-01-01_12-00-00")
>>> report.files["index.html"]
"""

from polyfuse.reporting.report import Report, build_report
from polyfuse.reporting.runs import Run, find_runs, load_model

__all__ = ["Report", "build_report", "Run", "find_runs", "load_model"]

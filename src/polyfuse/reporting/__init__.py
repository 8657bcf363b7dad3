"""Comparison reports of training runs: run tables, mean +- std over seeds, figures, HTML.

>>> from polyfuse.reporting import build_report
>>> report = build_report("outputs/avdigits_fusions/multiruns/2025-01-01_12-00-00")
>>> report.files["index.html"]

The names below load on first use (PEP 562): ``polyfuse.reporting.attention`` and ``.runs`` serve
``polyfuse-explain`` and ``polyfuse-eval`` without the report's plotting stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyfuse.lazy import lazy_attributes

if TYPE_CHECKING:
    from polyfuse.reporting.report import Report, build_report
    from polyfuse.reporting.runs import Run, find_runs, load_model

#: public name -> the submodule that defines it
_LAZY = {"Report": "report", "build_report": "report", "Run": "runs", "find_runs": "runs", "load_model": "runs"}

__all__ = ["Report", "build_report", "Run", "find_runs", "load_model"]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

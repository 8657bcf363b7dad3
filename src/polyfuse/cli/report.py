"""``polyfuse-report``: a comparison report of every run in a (multi)run directory.

Examples::

    polyfuse-report outputs/avdigits_fusions/multiruns/<time>
    polyfuse-report <dir> --out docs/report_example --metric test_real/acc --reference late

Writes ``runs.csv``, ``summary.csv``/``summary.md`` (mean ± std over seeds per variant), PNG figures
(learning curves, metric per variant, robustness curves when ``polyfuse-eval`` ran) and a
self-contained ``index.html`` into ``<dir>/report`` (or ``--out``).
"""

from __future__ import annotations

import argparse
from typing import Sequence

from polyfuse.cli.errors import user_errors
from polyfuse.reporting.report import build_report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="polyfuse-report", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="a multirun directory (or any directory holding run directories)")
    parser.add_argument("--out", default=None, help="output directory (default: <root>/report)")
    parser.add_argument("--metric", default=None, help="primary metric (default: test/<monitored metric>)")
    parser.add_argument("--reference", default="late",
                        help="variant whose robustness curves define effective robustness (MultiBench: late fusion)")
    parser.add_argument("--title", default=None, help="report title")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with user_errors("polyfuse-report"):  # reads run directories as data: nothing is instantiated
        report = build_report(args.root, args.out, metric=args.metric, reference=args.reference, title=args.title)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"polyfuse-report: {len(report.runs)} runs -> {report.out_dir}")
    for column in report.summary.columns[:6]:
        table.add_column(str(column))
    for row in report.summary.itertuples(index=False):
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in list(row)[:6]])
    console = Console()
    console.print(table)
    for name, path in sorted(report.files.items()):
        console.print(f"  {name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

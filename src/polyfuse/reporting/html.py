"""A self-contained HTML page: tables and PNG figures embedded as data URIs (one file to share)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

import pandas as pd

__all__ = ["table_html", "figure_html", "write_page"]

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
       border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
p.meta { color: #57606a; margin-top: 0; font-size: .9rem; }
table.data { border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1rem; }
table.data th, table.data td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: right; }
table.data th { background: #f6f8fa; } table.data td:first-child, table.data th:first-child { text-align: left; }
table.data tr:nth-child(even) td { background: #fbfbfc; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: .85rem; }
"""


def table_html(frame: pd.DataFrame, digits: int = 4) -> str:
    """``frame`` as an escaped HTML table."""
    return frame.to_html(index=False, border=0, classes="data", na_rep="–", escape=True,
                         float_format=lambda value: f"{value:.{digits}f}")


def figure_html(path: str | Path, caption: str) -> str:
    """A ``<figure>`` with the PNG at ``path`` inlined as base64."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(caption, quote=True)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def write_page(path: str | Path, title: str, sections: Sequence[tuple[str, str]], meta: str = "") -> Path:
    """Write ``<!DOCTYPE html>`` page: ``sections`` are ``(heading, inner HTML)`` pairs."""
    body = "\n".join(f"<section><h2>{html.escape(heading)}</h2>\n{inner}\n</section>" for heading, inner in sections)
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n<p class=\"meta\">{html.escape(meta)}</p>\n{body}\n</body>\n</html>\n")
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path

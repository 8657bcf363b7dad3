"""The built site renders: headless Chromium screenshots of the home page and the fusion catalogue
are not blank, and the pages' HTML holds their tables (one catalogue row per registered fusion).

Chromium comes from Debian (``apt-get install chromium``; ``.ci/run`` installs it on fresh CI
machines). When it is missing the test tries to install it and skips only if that fails, saying
why. ``python scripts/docs_screenshots.py`` refreshes the checked-in copies in
docs/assets/screenshots/ with the same functions.
"""

from __future__ import annotations

import importlib.util
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polyfuse import fusion

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("docs_screenshots", REPO / "scripts" / "docs_screenshots.py")
shots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shots)


class TableRows(HTMLParser):
    """The text of every ``<tr>`` inside the page's ``<table>`` elements, as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._depth = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self._depth += 1
        elif tag == "tr" and self._depth:
            self.rows.append([])
        elif tag in ("td", "th") and self._depth:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._depth -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_rows(page: Path) -> list[list[str]]:
    parser = TableRows()
    parser.feed(page.read_text())
    return parser.rows


@pytest.fixture(scope="module")
def chromium() -> str:
    browser = shots.find_chromium()
    if browser is None:
        why = shots.install_chromium()
        browser = shots.find_chromium()
        if browser is None:
            pytest.skip(f"headless Chromium is not installed and could not be installed ({why or 'no binary after install'}); "
                        "apt-get install chromium")
    return browser


def assert_rendered(png: Path) -> np.ndarray:
    """The screenshot is a full-size, non-blank page: text and tables drew many dark pixels."""
    assert png.stat().st_size > 20_000, f"{png} is suspiciously small ({png.stat().st_size} bytes)"
    image = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert image.shape == (shots.WINDOW[1], shots.WINDOW[0])
    assert image.std() > 10, "the rendered page is (nearly) one flat colour"
    rows_with_content = (image < 200).any(axis=1).mean()
    assert rows_with_content > 0.3, "the rendered page is mostly blank"
    return image


def test_home_page_has_its_tables(site: Path):
    rows = table_rows(site / "index.html")
    assert any(row[:1] == ["train something in five minutes"] for row in rows)
    assert any("Fusion catalogue" in " ".join(row) for row in rows)


def test_fusion_catalogue_has_one_full_row_per_fusion(site: Path):
    rows = table_rows(site / "fusions.html")
    header = next(row for row in rows if row[:2] == ["name", "paper"])
    assert header[2:] == ["equation", "cost: params · fwd+bwd × concat", "missing-modality strategy",
                          "AV-digits test acc (%)", "AV-digits robustness (%): no audio · each 50% absent"]
    start = rows.index(header) + 1
    catalogue = {row[0]: row for row in rows[start:start + len(fusion.available())]}
    assert sorted(catalogue) == fusion.available()
    for name, row in catalogue.items():
        assert len(row) == len(header) and all(row), f"catalogue row {name} has an empty cell: {row}"


@pytest.mark.parametrize("page", list(shots.PAGES))
def test_page_renders_in_headless_chromium(site: Path, chromium: str, tmp_path: Path, page: str):
    png = tmp_path / shots.PAGES[page]
    shots.screenshot(chromium, site / page, png)
    assert_rendered(png)


def test_checked_in_screenshots_are_real_renders():
    for name in shots.PAGES.values():
        assert_rendered(REPO / "docs" / "assets" / "screenshots" / name)

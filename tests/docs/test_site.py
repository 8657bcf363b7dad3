"""The documentation site builds with ``mkdocs build --strict`` (mkdocs.yml) and holds its key pages."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import polyfuse.fusion

REPO = Path(__file__).resolve().parents[2]

KEY_PAGES = ["index.html", "quickstart.html", "concepts.html", "fusions.html", "baselines.html", "faq.html",
             "datasets/avdigits.html", "guides/add_encoder.html", "guides/add_fusion.html", "guides/add_head.html",
             "guides/add_dataset.html", "tutorials/index.html", "tutorials/own_model_fusion.html",
             "tutorials/robustness_of_your_fusion.html", "tutorials/finetune_vilt_vqa.html", "api/fusion.html",
             "api/attention.html", "api/encoders.html", "api/heads.html", "api/losses.html", "api/metrics.html",
             "api/data.html", "api/models.html", "api/training.html", "api/robustness.html", "api/batch.html"]


def nav_files(nav: list) -> list[str]:
    """Every markdown file named in a mkdocs ``nav``."""
    files = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        files += nav_files(value) if isinstance(value, list) else [value]
    return files


def test_the_strict_build_passes_without_warnings(site_build):
    path, done = site_build
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-5000:]}"
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert not warnings, "\n".join(warnings)


@pytest.mark.parametrize("page", KEY_PAGES)
def test_key_pages_are_in_the_site(site: Path, page: str):
    assert (site / page).is_file(), f"{page} is missing from the built site"


def test_every_docs_page_is_in_the_nav():
    """Hand-written pages are reachable from the nav; generated ones (docs/examples/: checked-in
    report output) are linked from the page that discusses them."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    in_nav = set(nav_files(config["nav"]))
    pages = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md")
             if "examples" not in p.relative_to(REPO / "docs").parts}
    assert pages - in_nav == set(), f"pages not reachable from the nav: {sorted(pages - in_nav)}"


def test_the_api_reference_renders_every_public_fusion(site: Path):
    html = (site / "api" / "fusion.html").read_text()
    for name in polyfuse.fusion.__all__:
        assert f'id="polyfuse.fusion.{name}"' in html, f"polyfuse.fusion.{name} has no API entry"


def test_api_pages_render_docstring_roles_as_code(site: Path):
    """scripts/mkdocs_hooks.py: ``:class:`X``` in a docstring renders as ``X``, not as the raw role."""
    for page in (site / "api").glob("*.html"):
        text = page.read_text()
        assert not re.search(r":(class|func|meth|mod|attr):<code>", text), f"raw Sphinx role in {page.name}"


def test_tutorial_pages_show_the_scripts_they_run(site: Path):
    for name in ("own_model_fusion", "robustness_of_your_fusion", "finetune_vilt_vqa"):
        text = html.unescape(re.sub(r"<[^>]+>", "", (site / "tutorials" / f"{name}.html").read_text()))
        assert "def main(" in text, f"tutorials/{name}.html does not include docs/tutorials/{name}.py"


def test_a_broken_link_or_api_reference_fails_the_strict_build(tmp_path: Path):
    """The guard itself: the same configuration rejects a dead link and an unknown API object."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Broken\n\nSee [the missing page](missing.md).\n\n::: polyfuse.fusion.NoSuchFusion\n")
    config.update(docs_dir=str(docs), nav=[{"Home": "index.md"}], hooks=[str(REPO / hook) for hook in config["hooks"]])
    config.pop("extra_css")
    config["plugins"][1]["mkdocstrings"]["handlers"]["python"]["paths"] = [str(REPO / "src")]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert done.returncode != 0
    assert "missing.md" in done.stderr or "NoSuchFusion" in done.stderr, done.stderr[-3000:]


def _markdown_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and cells:
            rows[cells[0].strip("`")] = cells
    return rows


def test_catalogue_numbers_are_the_measured_table():
    """The catalogue's AV-digits columns repeat docs/fusions.md's generated table (scripts/fusion_table.py):
    rerunning the script and forgetting the catalogue fails here."""
    text = (REPO / "docs" / "fusions.md").read_text()
    measured = _markdown_rows(text[text.index("<!-- fusion-table:start -->"):text.index("<!-- fusion-table:end -->")])
    catalogue = _markdown_rows(text[text.index("## Catalogue"):text.index("### Interface")])
    assert sorted(catalogue) == sorted(polyfuse.fusion.available())
    for name, cells in catalogue.items():
        if cells[5] == "– " or cells[5] == "–":  # LM connectors: not a classifier fusion, not in the AV-digits table
            assert name.endswith("_connector") and name not in measured, name
            continue
        assert name in measured, f"{name} has a catalogue row but no measured run in the table"
        test_acc, no_audio, half_absent = measured[name][1], measured[name][4], measured[name][7]
        assert cells[5].split(";")[0].strip() == test_acc, f"{name}: catalogue test acc {cells[5]} != table {test_acc}"
        assert cells[6] == f"{no_audio} · {half_absent}", f"{name}: catalogue robustness {cells[6]} != table"

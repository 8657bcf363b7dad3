"""``polyfuse-report`` on a synthetic multirun (3 variants x 2 seeds): tables, mean ± std, robustness
summaries, figures, a well-formed self-contained HTML page -- and a real browser rendering it."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from polyfuse.cli.report import main as report_main
from polyfuse.reporting import build_report

VARIANTS = {  # overrides -> (test acc by seed, robustness slope when audio goes missing)
    ("model/fusion=concat",): ([0.80, 0.84], 0.6),
    ("model/fusion=late",): ([0.70, 0.72], 0.3),
    ("model/fusion=concat", "+model/modality_dropout=default"): ([0.78, 0.80], 0.1),
}
LEVELS = [0.0, 0.5, 1.0]


def _write_run(path: Path, overrides: tuple[str, ...], seed: int, acc: float, slope: float) -> None:
    (path / ".hydra").mkdir(parents=True)
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides_file.write_text(yaml.safe_dump([*overrides, f"seed={seed}", "trainer.max_epochs=3"]))
    fusion = overrides[0].split("=")[1]
    (path / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"model/fusion": fusion, "data": "avdigits", "hydra/launcher": "basic"}}}}))
    (path / "config.yaml").write_text(yaml.safe_dump(
        {"seed": seed, "model": {"fusion": {"_target_": f"polyfuse.fusion.{fusion.title()}Fusion"}}}))
    (path / "summary.json").write_text(json.dumps(
        {"monitor": "val/acc", "best_score": acc - 0.05, "epochs": 3, "fit_seconds": 10.0 + seed,
         "num_parameters": 1000, "test": {"test/acc": acc, "test_real/acc": acc - 0.2, "test/loss": 1 - acc}}))
    pd.DataFrame({"epoch": [0, 1, 2], "val/acc": [acc / 3, acc / 2, acc - 0.05], "train/loss": [2.0, 1.0, 0.5]}
                 ).to_csv(path / "metrics.csv", index=False)
    rows = [{"split": "test", "kind": "missing", "perturbation": f"missing:{m}", "modalities": m, "level": level,
             "acc": acc * (1 - (slope if m == "audio" else 0.2) * level)}
            for m in ("audio", "image") for level in LEVELS]
    (path / "robustness").mkdir()
    pd.DataFrame(rows).to_csv(path / "robustness" / "robustness.csv", index=False)


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    root = tmp_path / "multiruns" / "2025-01-01_00-00-00"
    number = 0
    for overrides, (accs, slope) in VARIANTS.items():
        for seed, acc in enumerate(accs):
            _write_run(root / str(number), overrides, seed, acc, slope)
            number += 1
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


class PageChecker(HTMLParser):
    """Checks that every non-void element is closed in order; collects tables, rows and image sources."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tables = 0
        self.rows = 0
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables += 1
        if tag == "tr":
            self.rows += 1
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def test_report_tables_mean_std_and_variants(multirun: Path):
    report = build_report(multirun)
    out = multirun / "report"
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6
    assert list(dict.fromkeys(runs["variant"])) == ["concat", "late", "concat, modality_dropout=default"]
    summary = pd.read_csv(out / "summary.csv").set_index("variant")
    assert summary.loc["concat", "test/acc mean"] == pytest.approx(0.82)
    assert summary.loc["concat", "test/acc std"] == pytest.approx(np.std([0.80, 0.84], ddof=1))
    assert summary.loc["late", "runs"] == 2
    markdown = (out / "summary.md").read_text()
    assert "| concat | 2 | 0.8200 ± 0.0283 |" in markdown
    for name in ("metric_by_variant.png", "learning_curves.png", "robustness_missing.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in markdown
    assert set(report.files) >= {"runs.csv", "summary.csv", "summary.md", "index.html", "robustness_summary.csv"}


def test_robustness_summary_ranks_the_flatter_curve_higher(multirun: Path):
    build_report(multirun, reference="late")
    table = pd.read_csv(multirun / "report" / "robustness_summary.csv")
    audio = table[table["perturbation"] == "missing:audio"].set_index("variant")
    # area under acc * (1 - slope * level) over [0, 1] = acc * (1 - slope / 2)
    assert audio.loc["late", "relative_robustness mean"] == pytest.approx(np.mean([0.70, 0.72]) * (1 - 0.3 / 2))
    assert audio.loc["late", "effective_robustness mean"] == pytest.approx(0.0, abs=1e-9)
    dropout = audio.loc["concat, modality_dropout=default"]
    assert dropout["effective_robustness mean"] > 0 > audio.loc["concat", "effective_robustness mean"]


def test_html_page_is_well_formed_and_self_contained(multirun: Path):
    page = build_report(multirun).files["index.html"]
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    checker = PageChecker()
    checker.feed(text)
    checker.close()
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    assert checker.tables >= 4 and checker.rows >= 6 + 3 + 1
    assert len(checker.images) == 3  # bars, learning curves, missing-modality curves (no corruption records)
    for source in checker.images:  # every figure inlined as a PNG, nothing fetched from elsewhere
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix) and base64.b64decode(source[len(prefix):])[:4] == b"\x89PNG"
    assert "src=\"http" not in text and "href=" not in text


def test_cli_writes_to_the_requested_directory(multirun: Path, tmp_path: Path, capsys):
    assert report_main([str(multirun), "--out", str(tmp_path / "out"), "--metric", "test_real/acc"]) == 0
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Primary metric: test_real/acc" in summary
    assert "index.html" in capsys.readouterr().out


def test_a_directory_without_runs_is_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no training run"):
        build_report(tmp_path)


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="headless Chromium not installed (apt-get install chromium); the HTML is still validated")
def test_headless_chromium_renders_the_report(multirun: Path, tmp_path: Path):
    from PIL import Image

    page = build_report(multirun).files["index.html"]
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,3000", f"--screenshot={shot}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.shape == (3000, 1280)
    rows_with_content = (image < 250).any(axis=1).mean()
    assert rows_with_content > 0.5, "the rendered page is mostly blank"
    figures = (image[:, :900] < 200).sum()
    assert figures > 50_000  # tables and plots drew dark pixels, not just a title

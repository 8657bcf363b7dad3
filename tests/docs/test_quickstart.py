"""Every code block of docs/quickstart.md runs.

Convention (how the page and this test agree):

* A fenced block whose language is ``bash`` (```` ```bash ```` or ```` ``` { .bash } ````) is
  executed, block after block in page order, with ``bash -euo pipefail`` in one temporary working
  directory that stands in for the repository root.
* A block carrying the class ``.no-run`` (```` ``` { .bash .no-run } ````) is shown, not run. Only
  the suite's own entry points may be marked so (``make train``, ``make test``, ``make docs``: the
  test would re-run the test suite or a 66-second training); :func:`test_only_make_commands_are_not_run`
  enforces that.
* In the working directory, ``.venv/bin/polyfuse-train`` is a shim that runs this environment's
  ``polyfuse-train`` with the user's arguments followed by :data:`TINY` (one epoch of two batches,
  SDPA attention without the ``auto`` timing, outputs under ``./outputs``); later Hydra overrides win, so a block's ``trainer.max_epochs=5`` is
  cut to 1. The other ``.venv/bin/polyfuse-*`` entry points are the real ones.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "docs" / "quickstart.md"
BIN = Path(sys.executable).parent

#: appended to every ``polyfuse-train`` command of the quickstart (``++``: add or override)
TINY = ["trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
        "++trainer.limit_test_batches=1", "data.test_splits=[test]", "data.batch_size=32",
        "callbacks.progress_bar=null",
        "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0",
        "attention_backend=sdpa"]  # `auto` first times every backend: most of a 2-step run

FENCE = re.compile(r"^```[ \t]*(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)


def code_blocks(markdown: str) -> list[tuple[str, set[str], str]]:
    """``(language, classes, body)`` of every fenced block, in order."""
    blocks = []
    for match in FENCE.finditer(markdown):
        info = match["info"].strip()
        if info.startswith("{"):  # attribute list: { .bash .no-run }
            classes = [word[1:] for word in info.strip("{} ").split() if word.startswith(".")]
            language, extra = (classes[0], set(classes[1:])) if classes else ("", set())
        else:
            language, extra = (info.split() or [""])[0], set()
        blocks.append((language, extra, match["body"]))
    return blocks


def test_the_quickstart_has_the_steps_of_the_issue():
    blocks = code_blocks(QUICKSTART.read_text())
    run = "\n".join(body for language, classes, body in blocks if language == "bash" and "no-run" not in classes)
    assert re.search(r"polyfuse-train -m model/fusion=concat,late seed=0,1", run), "the sweep is not executed"
    assert re.search(r"polyfuse-report \S+", run), "the report is not executed"
    assert re.search(r"polyfuse-train (?!-m)\S+=", run), "no single run with an override is executed"


def test_only_make_commands_are_not_run():
    for language, classes, body in code_blocks(QUICKSTART.read_text()):
        assert language, f"a quickstart block has no language:\n{body}"
        if "no-run" in classes:
            commands = [line.split("#")[0].strip() for line in body.splitlines()]
            assert all(not command or command.startswith("make ") for command in commands), (
                f"only `make` entry points may be marked .no-run, got:\n{body}")


def _workdir(tmp_path: Path) -> Path:
    """A stand-in repository root whose ``.venv/bin`` runs this environment's entry points."""
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "polyfuse-train"
    tiny = " ".join(f"'{override}'" for override in TINY)
    shim.write_text(f'#!/usr/bin/env bash\nexec "{BIN / "polyfuse-train"}" "$@" {tiny} "paths.log_dir=$PWD/outputs"\n')
    shim.chmod(0o755)
    for name in ("polyfuse-report", "polyfuse-eval", "polyfuse-explain"):
        (bin_dir / name).symlink_to(BIN / name)
    return tmp_path


@pytest.mark.slow
def test_every_quickstart_block_runs(tmp_path: Path):
    work = _workdir(tmp_path)
    env = dict(os.environ, POLYFUSE_ROOT=str(REPO), OMP_NUM_THREADS="2")
    ran = 0
    for language, classes, body in code_blocks(QUICKSTART.read_text()):
        if language != "bash" or "no-run" in classes:
            continue
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"quickstart block failed:\n{body}\n--- stderr ---\n{done.stderr[-4000:]}"
        ran += 1
    assert ran >= 3
    # what the page says the commands leave behind
    runs = list((work / "outputs" / "train" / "runs").glob("*/summary.json"))
    assert len(runs) == 1, "the single run with an override wrote no summary.json"
    sweep = work / "outputs" / "quickstart_sweep"
    assert sorted(p.parent.name for p in sweep.glob("*/summary.json")) == ["0", "1", "2", "3"]
    report = (sweep / "report" / "summary.md").read_text()
    assert "| concat | 2 |" in report and "| late | 2 |" in report
    assert (sweep / "report" / "index.html").is_file()

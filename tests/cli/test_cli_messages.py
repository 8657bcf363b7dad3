"""``python -m polyfuse.cli.train`` as a user runs it: mistakes give one message and no traceback
(the full traceback with ``HYDRA_FULL_ERROR=1``), and a run whose stdout is a pipe (a SLURM log
file) prints plain progress lines and each split's test metrics once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1", "data.batch_size=16", "trainer.enable_model_summary=false",
        "trainer.num_sanity_val_steps=0"]


def _train(tmp_path: Path, *overrides: str, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run([sys.executable, "-m", "polyfuse.cli.train", f"hydra.run.dir={tmp_path / 'run'}",
                           *overrides], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("polyfuse-train: error:")]


@pytest.mark.slow
@pytest.mark.parametrize("overrides, expected", [
    (["model.optimizer.lr=abc"],
     "polyfuse-train: error: model.optimizer.lr='abc' (str): expected a number > 0, e.g. model.optimizer.lr=1e-3"),
    (["data.root={tmp}/nowhere", "trainer.max_epochs=1"],
     "polyfuse-train: error: AV-digits info file not found: {tmp}/nowhere/info.json (is data.root right?)"),
], ids=["wrong-type", "missing-data-file"])
def test_a_user_mistake_is_one_line_exit_2_and_no_traceback(tmp_path: Path, overrides: list[str], expected: str):
    done = _train(tmp_path, *[o.format(tmp=tmp_path) for o in overrides])
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = _error_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith(expected.format(tmp=tmp_path)), done.stderr[-3000:]


@pytest.mark.slow
def test_hydra_full_error_still_shows_the_traceback(tmp_path: Path):
    done = _train(tmp_path, "model.optimizer.lr=abc", full_error=True)
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "ConfigValueError: model.optimizer.lr='abc'" in done.stderr


@pytest.mark.slow
def test_an_unknown_key_is_named_without_a_traceback(tmp_path: Path):
    done = _train(tmp_path, "model.no_such_key=1")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "Could not override 'model.no_such_key'" in done.stderr and "+model.no_such_key=1" in done.stderr


@pytest.mark.slow
def test_piped_stdout_gets_plain_progress_lines_and_one_test_table(tmp_path: Path):
    done = _train(tmp_path, *TINY, "callbacks.progress_bar.every_n_batches=2")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    batch = re.compile(r"^train epoch=1/1 batch=2/3 step=2/3 loss=\d+\.\d{4} samples_per_sec=\d+\.\d "
                       r"eta=\d+:\d\d:\d\d$", re.M)
    assert len(batch.findall(out)) == 1, out
    epoch = re.compile(r"^train epoch=1/1 done step=3 .*val/acc=[\d.]+ .*time=\d+:\d\d:\d\d eta=0:00:00$", re.M)
    assert len(epoch.findall(out)) == 1, out
    assert "\r" not in out and "━" not in out  # no live bar fragments
    # each split's metrics once: no Lightning table with a column per dataloader
    assert "DataLoader" not in out
    for key in ("test/acc", "test/loss", "test_real/acc", "test_real/loss"):
        assert len(re.findall(rf"\b{re.escape(key)}\b", out)) == 1, key

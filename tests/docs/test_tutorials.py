"""Every tutorial script in docs/tutorials/ runs, in a temporary directory, with a tiny budget.

Each script takes a flag for that budget (``--steps``, ``--tiny``); the page that shows it
(``docs/tutorials/<name>.md``) includes the script itself, so what runs here is what readers see.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TUTORIALS = REPO / "docs" / "tutorials"


def run_tutorial(name: str, *args: str, cwd: Path) -> str:
    """Run ``docs/tutorials/<name>.py`` with ``args`` from ``cwd``; returns its stdout."""
    env = dict(os.environ, POLYFUSE_ROOT=str(REPO))
    done = subprocess.run([sys.executable, str(TUTORIALS / f"{name}.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{name}.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def test_every_tutorial_script_is_tested_and_shown():
    scripts = {path.stem for path in TUTORIALS.glob("*.py")}
    assert scripts == {"own_model_fusion", "robustness_of_your_fusion", "finetune_vilt_vqa"}
    for name in scripts:
        page = (TUTORIALS / f"{name}.md").read_text()
        assert f'--8<-- "tutorials/{name}.py"' in page, f"docs/tutorials/{name}.md does not include its script"


def test_own_model_fusion(tmp_path: Path):
    out = run_tutorial("own_model_fusion", "--steps", "5", "--batch-size", "16", "--test-size", "100",
                       cwd=tmp_path)
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert {"cross_attention", "concat"} <= set(lines)
    for name in ("cross_attention", "concat"):
        first_loss, last_loss = map(float, lines[name][1:3])
        accuracies = [float(value.rstrip("%")) for value in lines[name][3:6]]
        assert first_loss > 0 and last_loss > 0 and all(0 <= a <= 100 for a in accuracies)


@pytest.mark.slow
def test_robustness_of_your_fusion(tmp_path: Path):
    out = run_tutorial("robustness_of_your_fusion", "--tiny", "--out", str(tmp_path / "runs"), cwd=tmp_path)
    table = (tmp_path / "runs" / "robustness_table.csv").read_text()
    for perturbation in ("missing:audio", "missing:image", "missing:text", "image:blur", "audio:noise_snr",
                         "text:token_dropout"):
        assert perturbation in table and perturbation in out
    assert "concat" in table and "late" in table



@pytest.mark.slow
def test_finetune_vilt_vqa(tmp_path: Path):
    out = run_tutorial("finetune_vilt_vqa", "--tiny", "--out", str(tmp_path / "vilt"), cwd=tmp_path)
    data = tmp_path / "vilt" / "data"
    assert (data / "v2_OpenEnded_mscoco_train2014_questions.json").is_file()
    assert list((data / "val2014").glob("COCO_val2014_*.jpg"))
    assert (tmp_path / "vilt" / "run" / "checkpoints" / "best.ckpt").is_file()
    assert "ViLT with" in out and "official VQA accuracy on val:" in out
    answered = [line for line in out.splitlines() if " -> " in line and "(humans:" in line]
    assert len(answered) == 8

"""The worked example of docs/inference.md runs.

Its ``python`` blocks run in page order in one namespace, in a child interpreter, from a working
directory that stands in for the repository root: ``data`` links to the checkout's data and
``outputs/train/runs/<time>`` is a tiny trained run (tests/inference/tiny_runs.py). Blocks marked
``.no-run`` (a full training, the retrieval example that needs another run) are shown only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_quickstart import code_blocks

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "inference.md"


def tiny_run(factory: pytest.TempPathFactory) -> Path:
    from ..inference.tiny_runs import tiny_run as build

    return build(factory, "classification")


def test_the_page_is_in_the_site_nav():
    assert "inference.md" in (REPO / "mkdocs.yml").read_text()


def test_inference_page_code_runs(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory):
    blocks = [(language, classes, body) for language, classes, body in code_blocks(PAGE.read_text())]
    python = "\n\n".join(body for language, classes, body in blocks if language == "python" and "no-run" not in classes)
    assert "polyfuse.load(" in python and "export_run(" in python and ".predict(" in python
    (tmp_path / "data").symlink_to(REPO / "data")
    shutil.copytree(tiny_run(tmp_path_factory), tmp_path / "outputs" / "train" / "runs" / "2026-01-01_00-00-00")
    env = dict(os.environ, POLYFUSE_ROOT=str(REPO), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"docs/inference.md failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    lines = done.stdout.splitlines()
    assert lines[0] == "classification ['image', 'audio', 'text']"
    assert "['README.md', 'config.yaml', 'inference.json', 'model.safetensors', 'tokenizer.json']" in lines
    assert (tmp_path / "my_digit_model" / "README.md").is_file()

"""The Python examples of docs/video.md run (in page order, one namespace) from the repository root."""

from __future__ import annotations

import os
from pathlib import Path

from .test_quickstart import code_blocks

REPO = Path(__file__).resolve().parents[2]


def test_video_page_examples_run(monkeypatch) -> None:
    monkeypatch.chdir(REPO)  # the examples read data/avdigits/video/...
    blocks = [body for language, classes, body in code_blocks((REPO / "docs" / "video.md").read_text())
              if language == "python" and "no-run" not in classes]
    assert len(blocks) >= 2
    namespace: dict = {"__name__": "video_page"}
    for body in blocks:
        exec(compile(body, "docs/video.md", "exec"), namespace)
    assert tuple(namespace["batch"].inputs["video"].values.shape) == (1, 8, 1, 32, 32)
    assert os.path.isdir(REPO / "data" / "avdigits" / "video")

"""The documentation site, built once per test session (``mkdocs build --strict``)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_screenshots_script() -> ModuleType:
    """``scripts/docs_screenshots.py`` (site build and Chromium helpers) as a module."""
    spec = importlib.util.spec_from_file_location("docs_screenshots", REPO / "scripts" / "docs_screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def site_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """``(site dir, completed mkdocs process)`` of a strict build into a temporary folder."""
    site = tmp_path_factory.mktemp("site") / "site"
    return site, load_screenshots_script().build_site(site)


@pytest.fixture(scope="session")
def site(site_build: tuple[Path, subprocess.CompletedProcess]) -> Path:
    """The built site; fails with mkdocs' log when the strict build did not pass."""
    path, done = site_build
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-5000:]}"
    return path

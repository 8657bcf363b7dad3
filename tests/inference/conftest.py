"""Fixtures: tiny trained runs of every task type (tests/inference/tiny_runs.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from .tiny_runs import tiny_run


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Tiny models: one intra-op thread (the root conftest's ``single_thread``)."""
    yield


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``runs(task)`` -> that task's tiny run directory (trained once per session)."""
    return lambda task: tiny_run(tmp_path_factory, task)

"""These tests use tiny tensors: one intra-op thread is fastest (and avoids spinning on a shared CPU)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(single_thread: None) -> None:
    """Every test here runs with the root conftest's ``single_thread``."""

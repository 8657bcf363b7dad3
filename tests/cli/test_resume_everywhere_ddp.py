"""Exact mid-epoch resume on every data path under 2-process DDP (gloo, CPU): every rank is killed at
the same step and resumes its own loader position (the checks: test_resume_everywhere.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_resume_everywhere import DATASETS, check_killed_run_resumes_exactly


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DATASETS))
def test_killed_ddp_run_resumes_exactly(name: str, tmp_path: Path):
    check_killed_run_resumes_exactly(name, 2, tmp_path)

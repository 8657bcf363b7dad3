"""The 2-process CPU run of contrastive_worker.py, shared by the tests that read its results."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from . import contrastive_worker as worker
from .harness import run_worker, tail


@pytest.fixture(scope="session")
def worker_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run the worker once (Lightning starts its second rank); ``(output dir, log tail)``."""
    out = tmp_path_factory.mktemp("ddp_contrastive")
    proc = run_worker(worker, out, timeout=400)
    return out, tail(proc.stdout + proc.stderr)


@pytest.fixture(scope="session")
def load_results(worker_run) -> Callable[[str], list[dict]]:
    """``load_results(prefix)``: ``OUT_DIR/{prefix}{rank}.pt`` of every rank, asserting (with the
    worker's log) that the worker got that far; called in the test body, so a failure is the test's."""

    def load(prefix: str) -> list[dict]:
        out, log = worker_run
        paths = [out / f"{prefix}{rank}.pt" for rank in range(worker.WORLD_SIZE)]
        assert all(path.is_file() for path in paths), f"the DDP worker did not finish this part:\n{log}"
        return [torch.load(path, weights_only=False) for path in paths]

    return load


@pytest.fixture(scope="session")
def ranks(load_results) -> list[dict]:
    """Losses, gradients and the NaN-guard run of every rank."""
    return load_results("rank")

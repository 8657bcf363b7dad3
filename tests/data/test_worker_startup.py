"""What a spawned loader worker pays at start-up: no Lightning import, neither from the loader's
``worker_init_fn`` (``SeedWorker`` instead of Lightning's ``pl_worker_init_function``) nor from the
program's main module (``polyfuse.cli.train``, ``eval`` and ``explain`` are light); and the worker
RNGs that ``SeedWorker`` seeds differ by worker and by rank and repeat with the seed."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from polyfuse.data.loader import MultimodalLoader, SeedWorker

from ..distributed.harness import clean_env
from .worker_probe import WorkerProbe  # its own module: the workers import it, and nothing of Lightning


def items(rank: int, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    from lightning.fabric.utilities.data import _auto_add_worker_init_fn

    monkeypatch.setenv("PL_SEED_WORKERS", "1")  # as after seed_everything(workers=True)
    loader = MultimodalLoader(WorkerProbe(), batch_size=1, collate_fn=list, num_workers=2, seed=7, rank=rank,
                              world_size=2)
    _auto_add_worker_init_fn(loader, rank)  # what Lightning does to a loader without a worker_init_fn
    assert isinstance(loader.worker_init_fn, SeedWorker)
    return [item for batch in loader for item in batch]


@pytest.mark.slow  # three loaders of two spawned workers
def test_workers_import_no_lightning_and_draw_by_worker_and_rank(monkeypatch):
    rank0, again, rank1 = items(0, monkeypatch), items(0, monkeypatch), items(1, monkeypatch)
    assert not any(item["lightning"] for item in rank0 + rank1)
    assert {item["worker"] for item in rank0} == {0, 1}
    assert [item["draws"] for item in rank0] == [item["draws"] for item in again]  # the seed repeats them
    first = {item["worker"]: item["draws"] for item in rank0[:2]}
    assert first[0] != first[1]                                                  # workers differ
    assert {item["draws"] for item in rank0}.isdisjoint(item["draws"] for item in rank1)  # ranks differ
    assert all(len(set(item["draws"])) == 3 for item in rank0)  # random, torch and numpy each seeded


@pytest.mark.parametrize("entry", ["polyfuse.cli.train", "polyfuse.cli.eval", "polyfuse.cli.explain"])
def test_entry_modules_import_no_lightning(entry: str):
    """Spawned workers re-import the main module (``python -m polyfuse.cli.train``, ``polyfuse-train``,
    the same for eval and explain): none imports Lightning; eval and explain not the model zoo either
    (``polyfuse.training`` and ``polyfuse.reporting`` load their names lazily, ``polyfuse.robustness`` names
    the model only in annotations)."""
    check = (f"import sys, {entry}; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'polyfuse')))")
    out = subprocess.run([sys.executable, "-c", check], env=clean_env(), capture_output=True, text=True, check=True)
    assert "'lightning" not in out.stdout and f"'{entry}'" in out.stdout, out.stdout + out.stderr
    assert "'polyfuse.models" not in out.stdout and "'polyfuse.training.module'" not in out.stdout, out.stdout
    if entry == "polyfuse.cli.train":
        assert "polyfuse.training" not in out.stdout

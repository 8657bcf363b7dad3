"""The one harness of the multi-process tests: start worker processes, and start gloo groups in them.

Test side: :func:`run_worker` (one process; Lightning or ``mp.spawn`` starts the other ranks) and
:func:`run_ranks` (one process per rank), both with :func:`clean_env` (no inherited DDP variables,
one thread, the repository on ``PYTHONPATH`` so workers import ``tests.*`` as a package), and
:func:`tail` for failure messages. Worker side: :func:`free_port`, :func:`init_gloo` and
:func:`spawn_gloo` (``mp.spawn`` of a function inside an initialised gloo group).

Imports only the standard library and torch: ``tests/losses/ddp_losses_worker.py`` checks that
the losses work in a process that never imported Lightning.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

__all__ = ["DDP_VARIABLES", "REPO_ROOT", "clean_env", "free_port", "init_gloo", "run_ranks", "run_worker", "worker_results",
           "spawn_gloo", "tail"]

#: variables a launcher sets for its ranks; a test's workers must not inherit them from the test process
DDP_VARIABLES = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
REPO_ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """``os.environ`` without :data:`DDP_VARIABLES`, with ``OMP_NUM_THREADS=1`` and the repository
    prepended to ``PYTHONPATH`` (workers run as ``python -m tests.<dir>.<worker>``), plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key not in DDP_VARIABLES}
    path = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(path), **extra)
    return env


def tail(output: str | None, characters: int = 4000) -> str:
    """The end of a process's output, for an assertion message."""
    return (output or "")[-characters:]


def _command(worker: ModuleType, args: Sequence[Any]) -> list[str]:
    return [sys.executable, "-m", worker.__name__, *map(str, args)]


def run_worker(worker: ModuleType, *args: Any, timeout: float, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    """``python -m <worker module> <args>`` in :func:`clean_env` (or ``env``); output captured as text."""
    return subprocess.run(_command(worker, args), env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def run_ranks(worker: ModuleType, rank_args: Sequence[Sequence[Any]], *, timeout: float) -> list[str]:
    """One ``python -m <worker module>`` per entry of ``rank_args``, all at once; asserts each exited
    with 0 and returns their outputs. Processes still running at a failure are killed."""
    procs = [subprocess.Popen(_command(worker, args), env=clean_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT) for args in rank_args]
    try:
        logs = [proc.communicate(timeout=timeout)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, tail(log)
    return logs


def worker_results(worker: ModuleType, out: Path, *args: Any, timeout: float = 240) -> Any:
    """:func:`run_worker` ``worker OUT *args``; asserts it exited with 0 and wrote ``OUT/results.pt``,
    which it returns loaded."""
    proc = run_worker(worker, out, *args, timeout=timeout)
    path = Path(out) / "results.pt"
    assert proc.returncode == 0 and path.is_file(), tail(proc.stdout + proc.stderr)
    return torch.load(path, weights_only=False)


def free_port() -> int:
    """A TCP port free on the loopback interface now (for a gloo rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_gloo(rank: int, world_size: int, init_method: str, timeout_s: float = 60) -> None:
    """Join the CPU process group ``init_method`` (``tcp://127.0.0.1:<port>`` or ``file://<path>``)."""
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))


def _rank_main(rank: int, function: Callable[..., None], world_size: int, port: int, args: tuple) -> None:
    init_gloo(rank, world_size, f"tcp://127.0.0.1:{port}")
    try:
        function(rank, *args)
        dist.barrier()  # no rank tears its gloo pairs down while another still has traffic in flight
    finally:
        dist.destroy_process_group()


def spawn_gloo(function: Callable[..., None], world_size: int, *args: Any) -> None:
    """Run ``function(rank, *args)`` in ``world_size`` spawned processes joined in one gloo group
    (one intra-op thread each); raises if a rank fails."""
    import torch.multiprocessing as mp

    torch.set_num_threads(1)
    mp.spawn(_rank_main, args=(function, world_size, free_port(), args), nprocs=world_size, join=True)

"""Shared timing for the ``scripts/bench_*.py`` side-by-side benchmarks.

Run as ``python scripts/bench_<x>.py``: the script's folder is on ``sys.path``, so a benchmark does
``from benchtools import interleaved_medians``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch


def synchronize(device: str | torch.device) -> None:
    """Wait for queued CUDA work (a no-op on CPU), so wall-clock timings cover the whole step."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(steps: Mapping[str, Callable[[], object]], repeats: int, warmup: int,
                        device: str | torch.device = "cpu") -> dict[str, float]:
    """Median seconds of each step, run side by side in one process.

    Every repeat runs every step once, rotating which goes first, so that no step always runs on
    warm caches or always after the same neighbour: on a noisy machine the *ratio* of two medians
    measured this way is meaningful even when the absolute times drift.
    """
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repeats):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            steps[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def training_step(optimizer: torch.optim.Optimizer, loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """A closure running one optimiser step: zero the gradients, ``loss().backward()``, ``step()``."""
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()

    return step

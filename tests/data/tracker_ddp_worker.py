"""Two ranks (gloo, CPU) count bad samples with :class:`BadSampleTracker`; run by test_tracker_ddp.py.

Usage: ``python -m tests.data.tracker_ddp_worker OUT_DIR``; each rank writes ``OUT_DIR/rank{R}.pt``.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from polyfuse.data.collate import MultimodalCollate
from polyfuse.data.errors import BadSample, BadSamplePolicy, BadSampleTracker, TooManyBadSamplesError
from tests.distributed.harness import spawn_gloo

WORLD_SIZE = 2


def _batch(good: int, bad: int, rank: int):
    """A collated batch of ``good`` samples and ``bad`` markers (``good + bad`` rows)."""
    samples = [{"id": f"r{rank}g{i}", "image": torch.zeros(1, 2, 2), "label": 1} for i in range(good)]
    samples += [BadSample(f"r{rank}b{i}", f"/data/r{rank}/{i}.jpg", "cannot decode image file") for i in range(bad)]
    return MultimodalCollate(["image"], shapes={"image": (1, 2, 2)})(samples)


def run(rank: int, out_dir: str) -> None:
    tracker = BadSampleTracker("train", BadSamplePolicy(max_bad_fraction=0.3, min_samples=1))
    result: dict = {}
    # epoch 0: rank 1 alone is over the limit (6 of 10), all ranks together are not (6 of 20)
    batches = [_batch(5, 0, rank), _batch(5, 0, rank)] if rank == 0 else [_batch(2, 3, rank), _batch(2, 3, rank)]
    for batch in batches:
        tracker.observe(batch)  # mid-epoch: no collective, no error on rank 1 (only a warning)
        result.setdefault("sizes", []).append(batch.batch_size)
        assert "bad_samples" not in batch.extras
    result["epoch0"] = tracker.end_epoch(complete=True)
    # an epoch cut short on rank 0 only: its own counts, no collective (rank 1 would never join it)
    tracker.observe(_batch(1, 1, rank))
    if rank == 0:
        result["cut_short"] = tracker.end_epoch(complete=False)
    else:
        tracker._reset()
        tracker.epoch += 1
    dist.barrier()
    # epoch 2: 8 of 20 bad over both ranks: every rank raises
    batches = [_batch(10, 0, rank)] if rank == 0 else [_batch(2, 8, rank)]
    for batch in batches:
        tracker.observe(batch)
    try:
        tracker.end_epoch(complete=True)
        result["raised"] = None
    except TooManyBadSamplesError as error:
        result["raised"] = str(error)
    result["history"] = tracker.history
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


if __name__ == "__main__":
    spawn_gloo(run, WORLD_SIZE, sys.argv[1])

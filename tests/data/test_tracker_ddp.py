"""Bad-sample counts are summed over DDP ranks at the end of an epoch (2 processes, gloo): the
history is global, and max_bad_fraction stops every rank or none."""

import pytest
import torch

from ..distributed.harness import run_worker, tail
from . import tracker_ddp_worker as worker


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("tracker_ddp")
    proc = run_worker(worker, out, timeout=180)
    paths = [out / f"rank{rank}.pt" for rank in range(worker.WORLD_SIZE)]
    assert proc.returncode == 0 and all(p.is_file() for p in paths), tail(proc.stdout + proc.stderr)
    return [torch.load(path, weights_only=False) for path in paths]


def test_counts_are_global_at_the_end_of_an_epoch(ranks):
    for result in ranks:
        assert result["sizes"] == [5, 5]  # placeholder rows keep every batch's size
        assert result["epoch0"] == {"epoch": 0, "good": 14, "bad": 6, "index_errors": 0}  # 6 of 20: under 0.3
        assert result["history"][-1] == {"epoch": 2, "good": 12, "bad": 8, "index_errors": 0}


def test_an_epoch_cut_short_keeps_local_counts_without_a_collective(ranks):
    assert ranks[0]["cut_short"] == {"epoch": 1, "good": 1, "bad": 1, "index_errors": 0}


def test_every_rank_raises_when_the_global_fraction_is_over_the_limit(ranks):
    for result in ranks:
        assert result["raised"] is not None and "8 of 20 samples (40.0%) are bad" in result["raised"]

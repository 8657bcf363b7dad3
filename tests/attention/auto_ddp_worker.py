"""``backend="auto"`` under a 2-process gloo group: ranks that prefer different backends end on the same ones.

Usage: ``python -m tests.attention.auto_ddp_worker OUT_DIR``. Timings are faked per rank (rank 0
prefers ``sdpa-math``, rank 1 ``reference``); the parity probe runs for real. Each rank calls
``auto`` on a bucket both ranks meet and rank 1 also on a bucket only it meets, before and after
:func:`polyfuse.attention.auto.sync_choices`, and records the backends dispatched to in
``OUT_DIR/rank<r>.json``; test_auto_ddp.py compares them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from polyfuse.attention import attention, auto
from tests.distributed.harness import spawn_gloo

PREFERRED = {0: "sdpa-math", 1: "reference"}


def _call(lq: int, lk: int) -> str:
    gen = torch.Generator().manual_seed(lq)
    q = torch.randn(2, 2, lq, 16, generator=gen, requires_grad=True)
    k, v = (torch.randn(2, 2, lk, 16, generator=gen, requires_grad=True) for _ in range(2))
    chosen: list[str] = []
    real = auto.choose_backend
    auto.choose_backend = lambda *a, **kw: chosen.append(real(*a, **kw)) or chosen[-1]
    try:
        attention(q, k, v, torch.arange(lk)[None, :] < torch.tensor([[lk], [lk // 2]]), backend="auto").sum().backward()
    finally:
        auto.choose_backend = real
    return chosen[0]


def run(rank: int, out_dir: str) -> None:
    preferred = PREFERRED[rank]
    auto.measure = lambda q, k, v, names, run, needs_grad: {name: 0.1 if name == preferred else 1.0 for name in names}
    record = {"before": {"shared": _call(24, 24)}}
    if rank == 1:
        record["before"]["own"] = _call(40, 80)
    record["local"] = sorted(set(auto.auto_choices().values()))
    agreed = auto.sync_choices()
    record["agreed"] = len(agreed)
    record["after"] = {"shared": _call(24, 24), "own": _call(40, 80), "nearest": _call(12, 12)}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    spawn_gloo(run, 2, sys.argv[1])

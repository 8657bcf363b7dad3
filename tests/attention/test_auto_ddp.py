"""``backend="auto"`` under DDP: every rank runs the same kernels (rank 0's choices first)."""

from __future__ import annotations

import json

import pytest

import tests.attention.auto_ddp_worker as worker
from polyfuse.attention import auto
from tests.distributed.harness import run_worker, tail


@pytest.mark.slow  # two spawned ranks (~20 s on 2 shared cores)
def test_ranks_with_different_preferences_dispatch_the_same_backends(tmp_path):
    proc = run_worker(worker, tmp_path, timeout=240)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["local"] == ["sdpa-math"] and rank1["local"] == ["reference"]  # they did disagree locally
    # before the exchange every rank runs sdpa, whatever it measured
    assert set(rank0["before"].values()) == set(rank1["before"].values()) == {"sdpa"}
    assert rank0["agreed"] == rank1["agreed"] == 2
    assert rank0["after"] == rank1["after"]
    assert rank0["after"]["shared"] == "sdpa-math"    # both measured it: rank 0's choice
    assert rank0["after"]["own"] == "reference"       # only rank 1 measured it: its choice, on rank 0 too
    assert rank0["after"]["nearest"] == "sdpa-math"   # unmeasured at the exchange: nearest agreed bucket


def test_merge_keeps_rank0_and_drops_a_backend_that_failed_parity_anywhere():
    def key(lq):
        return auto.BucketKey("cuda", "bf16", True, True, False, False, 64, "self", 16, lq, lq)

    rank0 = {"choices": {key(64): "triton"}, "parity": {key(64).parity_key(): ["sdpa", "triton", "reference"]}}
    rank1 = {"choices": {key(64): "flex", key(128): "triton"},
             "parity": {key(64).parity_key(): ["sdpa", "flex", "reference"]}}  # triton failed on rank 1's GPU
    merged = auto.auto_sync.merge_tables([rank0, rank1], auto.BucketKey.parity_key, auto.safe_choice)
    assert merged["parity"] == {key(64).parity_key(): ["sdpa", "reference"]}
    assert merged["choices"] == {key(64): "sdpa", key(128): "sdpa"}
    rank1["parity"][key(64).parity_key()].insert(1, "triton")
    merged = auto.auto_sync.merge_tables([rank0, rank1], auto.BucketKey.parity_key, auto.safe_choice)
    assert merged["choices"] == {key(64): "triton", key(128): "triton"}  # rank 0 first; rank 1's own bucket kept


def test_under_ddp_a_rank_never_runs_a_backend_its_own_probe_dropped(make_qkv, monkeypatch):
    auto.clear_auto_cache()
    monkeypatch.setattr(auto.auto_sync, "is_distributed", lambda: True)
    monkeypatch.setattr(auto, "measure", lambda q, k, v, names, run, needs_grad: {"sdpa": 1.0, "sdpa-math": 0.1})
    q, k, v = (t.detach() for t in make_qkv(1, 2, 8, 8, 16))
    choose = lambda: auto.choose_backend(q, k, v, has_mask=False, causal=False, dropout_p=0.0, run=None)  # noqa: E731
    try:
        assert choose() == "sdpa"  # no exchange yet: sdpa on every rank, whatever this rank measured
        (key,) = auto.auto_choices()
        auto._agreed[key] = "sdpa-math"
        assert choose() == "sdpa-math"
        auto._parity[key.parity_key()] = ["sdpa", "reference"]  # as if sdpa-math had failed here after the exchange
        assert choose() == "sdpa"
    finally:
        auto.clear_auto_cache()

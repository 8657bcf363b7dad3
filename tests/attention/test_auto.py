"""``backend="auto"``: measured choice among correct backends, cached per bucket, SDPA unless beaten."""

from __future__ import annotations

import pytest
import torch

from polyfuse.attention import attention
from polyfuse.attention import auto


@pytest.fixture(autouse=True)
def fresh_cache():
    auto.clear_auto_cache()
    yield
    auto.clear_auto_cache()


def test_sdpa_wins_unless_beaten_by_the_margin():
    assert auto.pick({"sdpa": 1.0, "reference": 0.97}) == "sdpa"
    assert auto.pick({"sdpa": 1.0, "reference": 0.80}) == "reference"
    assert auto.pick({"sdpa": float("inf"), "reference": 2.0}) == "reference"
    assert auto.pick({"sdpa": 1.0, "triton": 0.5, "flex": 0.6}) == "triton"


def test_cpu_candidates_exclude_triton_and_flex(make_qkv):
    q, k, v = make_qkv(2, 2, 16, 16, 32)
    assert auto.candidates(q, k, v, 0.0) == ["sdpa", "sdpa-math", "reference"]
    huge = torch.zeros(()).expand(64, 16, 2048, 32)  # shape only: scores would need 16 GiB
    assert auto.candidates(huge, huge, huge, 0.0) == ["sdpa", "sdpa-math"]


def test_measures_once_per_bucket_and_reuses_the_choice(make_qkv, padding_mask, monkeypatch):
    q, k, v = make_qkv(2, 2, 20, 12, 32)
    mask = padding_mask(2, 12)
    measured = []
    real_measure = auto.measure
    monkeypatch.setattr(auto, "measure", lambda *a, **kw: measured.append(1) or real_measure(*a, **kw))
    attention(q, k, v, mask, backend="auto")
    attention(q, k, v, mask, backend="auto")
    q2, k2, v2 = make_qkv(2, 2, 19, 11, 32, seed=1)  # same power-of-two buckets
    attention(q2, k2, v2, padding_mask(2, 11), backend="auto")
    assert measured == [1]
    (key, choice), = auto.auto_choices().items()
    assert choice in ("sdpa", "sdpa-math", "reference")
    assert key[3] is True and key[4] is True  # needs grad, has mask
    with torch.no_grad():
        attention(q, k, v, mask, backend="auto")
    assert len(measured) == 2  # inference is its own bucket


def test_a_win_over_sdpa_must_be_confirmed(make_qkv, monkeypatch):
    q, k, v = (t.detach() for t in make_qkv(1, 2, 8, 8, 16))
    rounds = iter([{"sdpa": 1.0, "sdpa-math": 0.5, "reference": 2.0}, {"sdpa": 1.0, "sdpa-math": 1.1}])
    calls = []
    monkeypatch.setattr(auto, "measure", lambda q, k, v, names, run, needs_grad: calls.append(names) or next(rounds))
    attention(q, k, v, backend="auto")
    assert calls[1] == ["sdpa", "sdpa-math"]  # the head-to-head re-measurement
    assert list(auto.auto_choices().values()) == ["sdpa"]


def test_dispatches_to_the_measured_winner(make_qkv, monkeypatch):
    q, k, v = (t.detach() for t in make_qkv(1, 2, 8, 8, 16))
    monkeypatch.setattr(auto, "measure", lambda q, k, v, names, run, needs_grad: {"sdpa": 1.0, "reference": 0.1})
    import polyfuse.attention as api

    used = []
    real = api._run_backend
    monkeypatch.setattr(api, "_run_backend", lambda name, *a: used.append(name) or real(name, *a))
    attention(q, k, v, backend="auto")
    assert used == ["reference"]


def test_measurement_does_not_shift_the_rng_stream(make_qkv):
    q, k, v = (t.detach() for t in make_qkv(1, 2, 8, 8, 16))
    torch.manual_seed(5)
    attention(q, k, v, dropout_p=0.5, backend="auto")  # measures (draws dropout masks) first
    after_auto = torch.rand(3)
    torch.manual_seed(5)
    attention(q, k, v, dropout_p=0.5, backend="auto")  # cached: dispatches without measuring
    assert torch.equal(torch.rand(3), after_auto)


def test_inside_torch_compile_nothing_is_measured(make_qkv, monkeypatch):
    q, k, v = (t.detach() for t in make_qkv(1, 2, 8, 8, 16))
    monkeypatch.setattr(auto, "measure", lambda *a, **kw: pytest.fail("measured while compiling"))
    compiled = torch.compile(lambda q, k, v: attention(q, k, v, backend="auto"), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), attention(q, k, v, backend="reference"), atol=2e-5, rtol=2e-5)


def test_a_backend_that_fails_is_never_picked(make_qkv):
    q, k, v = make_qkv(1, 2, 8, 8, 16)

    def run(name, q, k, v):
        if name == "reference":
            raise RuntimeError("refuses this case")
        return attention(q, k, v, backend=name)

    timings = auto.measure(q, k, v, ["sdpa", "reference"], run, needs_grad=True)
    assert timings["reference"] == float("inf") and 0 < timings["sdpa"] < float("inf")
    assert auto.pick(timings) == "sdpa"

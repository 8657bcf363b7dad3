"""``backend="auto"``: measured choice among correct backends, cached per bucket, SDPA unless beaten."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from polyfuse.attention import attention
from polyfuse.attention import auto, auto_probe


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
    issue = torch.zeros(()).expand(2, 8, 4096, 64)  # shape only: the issue's case, 2 GiB of fp32 scores
    assert auto.candidates(issue, issue, issue, 0.0) == ["sdpa"]  # no quadratic-memory candidate


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
    assert key.needs_grad and key.has_mask
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
    assert used == ["sdpa", "sdpa-math", "reference"]  # the parity probe's candidates, then the dispatch


def test_measurement_does_not_shift_the_rng_stream(make_qkv):
    q, k, v = (t.detach() for t in make_qkv(1, 2, 8, 8, 16))
    torch.manual_seed(5)
    attention(q, k, v, dropout_p=0.5, backend="auto")  # measures (draws dropout masks) first
    after_auto = torch.rand(3)
    torch.manual_seed(5)
    attention(q, k, v, dropout_p=0.5, backend="auto")  # cached: dispatches without measuring
    assert torch.equal(torch.rand(3), after_auto)


def test_inside_torch_compile_nothing_is_measured_and_a_miss_is_reported(make_qkv, monkeypatch):
    q, k, v = (t.detach() for t in make_qkv(1, 2, 8, 8, 16))
    monkeypatch.setattr(auto, "measure", lambda *a, **kw: pytest.fail("measured while compiling"))
    monkeypatch.setattr(auto_probe, "check_candidates", lambda *a, **kw: pytest.fail("probed while compiling"))
    compiled = torch.compile(lambda q, k, v: attention(q, k, v, backend="auto"), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), attention(q, k, v, backend="reference"), atol=2e-5, rtol=2e-5)
    (missed,) = auto.compile_misses()
    assert missed.head_dim == 16 and not auto.auto_choices()  # ran sdpa, decided nothing
    with pytest.warns(RuntimeWarning, match=r"no eager choice .*prepare\(\)"):
        auto.sync_choices()
    assert auto.compile_misses() == []


def test_under_torch_compile_the_eager_choice_is_used(make_qkv, monkeypatch):
    q, k, v = (t.detach() for t in make_qkv(1, 2, 8, 8, 16))
    monkeypatch.setattr(auto, "measure", lambda q, k, v, names, run, needs_grad: {"sdpa": 1.0, "reference": 0.1})
    choices = auto.prepare(lambda: attention(q, k, v, backend="auto"))  # eager: probes and times
    assert list(choices.values()) == ["reference"]
    import polyfuse.attention as api

    used = []
    real = api._run_backend
    monkeypatch.setattr(api, "_run_backend", lambda name, *a: used.append(name) or real(name, *a))
    q2, k2, v2 = (t.detach() for t in make_qkv(1, 2, 7, 7, 16, seed=1))  # same bucket
    compiled = torch.compile(lambda q, k, v: attention(q, k, v, backend="auto"), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(q2, k2, v2), attention(q2, k2, v2, backend="reference"), atol=2e-5, rtol=2e-5)
    assert used[0] == "reference" and auto.compile_misses() == []


def test_a_backend_that_fails_is_never_picked(make_qkv):
    q, k, v = make_qkv(1, 2, 8, 8, 16)

    def run(name, q, k, v):
        if name == "reference":
            raise RuntimeError("refuses this case")
        return attention(q, k, v, backend=name)

    timings = auto.measure(q, k, v, ["sdpa", "reference"], run, needs_grad=True)
    assert timings["reference"] == float("inf") and 0 < timings["sdpa"] < float("inf")
    assert auto.pick(timings) == "sdpa"


def test_quadratic_candidates_never_run_above_the_threshold(make_qkv, padding_mask, monkeypatch):
    """A long call probes on the small probe input only and times nothing: the only candidate left on
    CPU is SDPA (call counting, no clocks)."""
    monkeypatch.setattr(auto, "QUADRATIC_MAX_BYTES", 1 << 20)  # the probe (0.5 MiB of scores) stays under it
    monkeypatch.setattr(auto, "measure", lambda *a, **kw: pytest.fail("timed a single candidate"))
    import polyfuse.attention as api

    calls = []
    real = api._run_backend
    monkeypatch.setattr(api, "_run_backend", lambda name, args, *a: calls.append((name, args.q.shape[2])) or real(name, args, *a))
    q, k, v = make_qkv(1, 2, 400, 400, 16)  # 1.2 MiB of scores: over the threshold
    attention(q, k, v, padding_mask(1, 400), backend="auto")
    assert ("sdpa-math", auto_probe.PROBE_LEN) in calls  # checked as a candidate on the probe
    assert [name for name, length in calls if length == 400] == ["sdpa"]  # the real call: SDPA alone
    assert list(auto.auto_choices().values()) == ["sdpa"]


def test_a_chosen_quadratic_backend_is_not_reused_for_a_much_larger_call(make_qkv, monkeypatch):
    monkeypatch.setattr(auto, "measure", lambda q, k, v, names, run, needs_grad: {"sdpa": 1.0, "reference": 0.1})
    q, k, v = (t.detach() for t in make_qkv(1, 2, 33, 33, 16))
    attention(q, k, v, backend="auto")
    assert list(auto.auto_choices().values()) == ["reference"]
    monkeypatch.setattr(auto, "QUADRATIC_MAX_BYTES", 2 * 33 * 33 * 4)  # as if the bucket's larger end were huge
    q2, k2, v2 = (t.detach() for t in make_qkv(1, 2, 64, 64, 16))  # same bucket, 4x the scores
    assert auto.choose_backend(q2, k2, v2, has_mask=False, causal=False, dropout_p=0.0, run=None) == "sdpa"


def _wrong_backend(wrong: str, fault: str):
    """``run_backend`` whose backend ``wrong`` ignores the padding mask or raises."""

    real = auto_probe.run_backend

    def run(name, args):
        if name != wrong:
            return real(name, args)
        if fault == "raises":
            raise RuntimeError("kernel launch failed")
        return real(name, replace(args, key_padding_mask=None))

    return run


@pytest.mark.parametrize("fault", ["ignores the mask", "raises"])
def test_a_candidate_failing_the_parity_probe_is_dropped_with_one_warning(fault, make_qkv, padding_mask, monkeypatch):
    monkeypatch.setattr(auto_probe, "run_backend", _wrong_backend("sdpa-math", fault))
    probes, timed = [], []
    real_check = auto_probe.check_candidates
    monkeypatch.setattr(auto_probe, "check_candidates", lambda *a: probes.append(a[0]) or real_check(*a))
    monkeypatch.setattr(auto, "measure", lambda q, k, v, names, run, needs_grad: timed.append(names) or
                        {name: 1.0 if name == "sdpa" else 0.1 for name in names})
    q, k, v = make_qkv(2, 2, 20, 12, 16)
    with pytest.warns(RuntimeWarning, match=r"dropped 'sdpa-math' for cpu float32, head dim 16, masked, q>k") as record:
        attention(q, k, v, padding_mask(2, 12), backend="auto")
    assert len([w for w in record if "dropped" in str(w.message)]) == 1
    q2, k2, v2 = make_qkv(2, 2, 40, 24, 16)  # another bucket of the same case: no new probe, no new warning
    attention(q2, k2, v2, padding_mask(2, 24), backend="auto")
    assert probes == [["sdpa", "sdpa-math"]]
    assert all("sdpa-math" not in names for names in timed) and timed
    assert "sdpa-math" not in auto.auto_choices().values()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("has_mask,causal,shape_kind", [(True, False, "q<k"), (False, True, "self"), (True, True, "q>k")])
def test_the_probe_passes_correct_backends_and_catches_a_wrong_one(dtype, has_mask, causal, shape_kind):
    args = auto_probe.probe_args(torch.device("cpu"), dtype, 16, has_mask=has_mask, causal=causal,
                                 shape_kind=shape_kind)
    assert auto_probe.check_candidates(["sdpa", "sdpa-math"], args, auto_probe.run_backend) == {"sdpa": None,
                                                                                               "sdpa-math": None}

    def scaled_wrong(name, a):  # a softmax scale 5% off: a plausible kernel bug
        return auto_probe.run_backend("sdpa", replace(a, scale=1.05 * a.softmax_scale))

    assert "max error" in auto_probe.check_candidates(["wrong"], args, scaled_wrong)["wrong"]


def test_the_probe_catches_nan_for_an_absent_sample():
    args = auto_probe.probe_args(torch.device("cpu"), torch.float32, 16, has_mask=True, causal=False, shape_kind="self")

    def nan_for_empty_rows(name, a):
        out = auto_probe.run_backend("sdpa", a)
        return torch.where(a.key_padding_mask.any(-1)[:, None, None, None], out, torch.full_like(out, float("nan")))

    assert auto_probe.check_candidates(["nan"], args, nan_for_empty_rows)["nan"] == "out has NaN/inf"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("has_mask,causal,shape_kind", [(True, False, "self"), (True, False, "q<k"),
                                                        (True, True, "self"), (False, True, "q>k")])
def test_on_cuda_every_candidate_passes_the_parity_probe(dtype, has_mask, causal, shape_kind):
    """On a GPU, no kernel is silently dropped: sdpa, triton and flex all match the fp32 reference."""
    args = auto_probe.probe_args(torch.device("cuda"), dtype, 64, has_mask=has_mask, causal=causal,
                                 shape_kind=shape_kind)
    names = [name for name in auto.candidates(args.q, args.k, args.v, 0.0) if name != "reference"]
    assert {"sdpa", "triton", "flex"} <= set(names)
    assert auto_probe.check_candidates(names, args, auto_probe.run_backend) == dict.fromkeys(names)


@pytest.mark.parametrize("has_mask", [False, True])
def test_the_first_call_under_inference_mode_probes_and_answers(make_qkv, padding_mask, has_mask):
    """Evaluation (Lightning's validate / test, polyfuse-eval) runs under ``torch.inference_mode``: the parity
    probe of a new case must still run its backward on tensors of its own."""
    q, k, v = (t.detach() for t in make_qkv(2, 2, 8, 8, 16))
    mask = padding_mask(2, 8) if has_mask else None
    with torch.inference_mode():
        out = attention(q, k, v, mask, backend="auto")
    assert auto.auto_choices() and not out.requires_grad
    torch.testing.assert_close(out, attention(q, k, v, mask, backend="reference"), atol=1e-5, rtol=1e-5)

"""``backend="auto"`` on packed (cu_seqlens) calls: ``padded`` unless a native varlen candidate passes the
packed parity probe and beats it twice; cached per bucket (memory and file), nothing probed under compile.

CUDA is absent here, so the decision logic runs with :func:`auto_varlen.native_device` patched to accept
CPU tensors and a fake native backend (or ``triton`` in the interpreter, tiny) among the candidates.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import replace

import pytest
import torch

from polyfuse.attention import attention, auto, auto_cache, auto_probe, auto_varlen, varlen_dispatch
from polyfuse.attention.varlen import cu_seqlens_from_lengths

from .params import needs_interpreter

TINY_PROBE = {"packed-self": ([5, 3, 0], [5, 3, 0]), "packed-cross": ([2, 6, 3], [5, 2, 0])}


@pytest.fixture(autouse=True)
def fresh_cache():
    auto.clear_auto_cache()
    yield
    auto.clear_auto_cache()


def _packed(lengths_q, lengths_k, heads=2, head_dim=16, seed=0, grad=True):
    gen = torch.Generator().manual_seed(seed)
    cu_q, cu_k = cu_seqlens_from_lengths(torch.tensor(lengths_q)), cu_seqlens_from_lengths(torch.tensor(lengths_k))
    q, k, v = (torch.randn(sum(n), heads, head_dim, generator=gen).requires_grad_(grad)
               for n in (lengths_q, lengths_k, lengths_k))
    return q, k, v, cu_q, cu_k


def _packed_choices() -> dict:
    """``auto``'s choices for packed buckets (the padded fallback's own choices left out)."""
    return {key: name for key, name in auto.auto_choices().items() if isinstance(key, auto_varlen.PackedBucketKey)}


def _auto(q, k, v, cu_q, cu_k, backend="auto", **kwargs):
    return attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, backend=backend, **kwargs)


def _correct(args):
    """A correct native backend: the padded fallback with the fp32 reference."""
    return varlen_dispatch.padded_fallback(args, "reference")


def _wrong(args):
    """A plausible kernel bug: the softmax scale 10% off."""
    return varlen_dispatch.padded_fallback(replace(args, scale=1.1 * args.softmax_scale), "reference")


def _packed_only(log: list, step: str, names) -> None:
    if "fake" in names or "padded" in names:
        log.append((step, list(names)))


@pytest.fixture
def fake_native(monkeypatch):
    """CPU counts as a native device; ``fake`` (``fake(fn)`` sets its body) is the only native candidate;
    timings favour it (10x faster than ``padded``). ``fake(fn)`` returns the log of the packed probes and
    timings and of fake's calls: ``("probe", names)``, ``("measure", names)``, ``("fake", query rows)``
    (the padded fallback's own ``auto`` choice, among sdpa & co, is not logged)."""
    log = []
    body = {"fn": _correct}
    monkeypatch.setattr(auto_varlen, "native_device", lambda device: True)
    monkeypatch.setattr(auto_varlen, "candidates", lambda args: ["padded", "fake"])
    monkeypatch.setitem(varlen_dispatch.NATIVE_VARLEN, "fake", lambda args: log.append(("fake", args.q.shape[0]))
                        or body["fn"](args))
    real_check = auto_probe.check_candidates
    monkeypatch.setattr(auto_probe, "check_candidates", lambda names, *a, **kw: _packed_only(log, "probe", names)
                        or real_check(names, *a, **kw))
    monkeypatch.setattr(auto, "measure", lambda q, k, v, names, run, needs_grad: _packed_only(log, "measure", names)
                        or {name: 0.1 if name == "fake" else 1.0 for name in names})

    def set_body(fn):
        body["fn"] = fn
        return log

    return set_body


def test_on_cpu_a_packed_call_takes_the_padded_fallback_unprobed(monkeypatch):
    monkeypatch.setattr(auto_varlen, "check_candidates", lambda *a, **kw: pytest.fail("probed a packed case on CPU"))
    real_measure = auto.measure  # the padded fallback's own auto choice (sdpa & co) is made as before
    monkeypatch.setattr(auto, "measure", lambda q, k, v, names, *a: pytest.fail("timed a packed call on CPU")
                        if "padded" in names else real_measure(q, k, v, names, *a))
    q, k, v, cu_q, cu_k = _packed([3, 0, 5], [4, 2, 6])
    assert auto_varlen.candidates(varlen_dispatch.packed_args(q, k, v, cu_q, cu_k, None, None, causal=False,
                                                              dropout_p=0.0, scale=None)) == ["padded"]
    out = _auto(q, k, v, cu_q, cu_k)
    torch.testing.assert_close(out, _auto(q, k, v, cu_q, cu_k, backend="reference"), atol=1e-5, rtol=1e-5)
    assert all(isinstance(key, auto.BucketKey) for key in auto.auto_choices())  # only the padded call's choice


def test_native_candidates_follow_triton_and_dropout(monkeypatch):
    monkeypatch.setattr(auto_varlen, "native_device", lambda device: True)
    monkeypatch.setattr(auto, "triton_eligible", lambda q, k, v: q.shape[-1] <= 128)
    q, k, v, cu_q, cu_k = _packed([3, 5], [4, 6], grad=False)

    def names(q, k, v, dropout_p):
        return auto_varlen.candidates(varlen_dispatch.packed_args(q, k, v, cu_q, cu_k, None, None, causal=False,
                                                                  dropout_p=dropout_p, scale=None))

    assert names(q, k, v, 0.0) == ["padded", "triton", "flex"]
    assert names(q, k, v, 0.1) == ["padded", "triton"]  # flex has no dropout
    wide = [t.new_zeros(t.shape[0], 2, 256) for t in (q, k, v)]
    assert names(*wide, 0.0) == ["padded", "flex"]  # the head dim does not fit the kernels


def test_a_faster_correct_candidate_is_chosen_dispatched_and_kept_per_bucket(fake_native):
    log = fake_native(_correct)
    q, k, v, cu_q, cu_k = _packed([3, 0, 5], [4, 2, 6])
    out = _auto(q, k, v, cu_q, cu_k)
    expected = _auto(q, k, v, cu_q, cu_k, backend="reference")
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    steps = [entry[0] for entry in log]
    assert steps[0] == "probe" and log[0] == ("probe", ["fake"])
    assert [entry for entry in log if entry[0] == "measure"] == [("measure", ["padded", "fake"])] * 2  # + confirmation
    assert log[-1] == ("fake", 8)  # the real call (8 query rows) went to the winner
    ((key, choice),) = _packed_choices().items()
    assert choice == "fake"
    assert key.kind == "packed-cross" and key.needs_grad and (key.heads, key.samples, key.tq, key.tk) == (2, 4, 8, 16)
    del log[:]
    q2, k2, v2, cu_q2, cu_k2 = _packed([2, 2, 4], [5, 3, 6], seed=1)  # same buckets: dispatched, not re-measured
    _auto(q2, k2, v2, cu_q2, cu_k2)
    assert log == [("fake", 8)]


def test_a_win_over_padded_must_be_confirmed(fake_native, monkeypatch):
    log = fake_native(_correct)
    rounds = [{"padded": 1.0, "fake": 0.5}, {"padded": 1.0, "fake": 0.98}]  # the second: within the margin
    monkeypatch.setattr(auto, "measure", lambda q, k, v, names, run, needs_grad: (rounds.pop(0) if "padded" in names
                                                                                  else dict.fromkeys(names, 1.0)))
    q, k, v, cu_q, cu_k = _packed([3, 5], [3, 5])
    _auto(q, k, v, cu_q, cu_k)
    assert rounds == []  # measured, then re-measured head to head
    assert list(_packed_choices().values()) == ["padded"]
    assert ("fake", 8) not in log  # dispatched to the padded fallback


def test_a_wrong_candidate_is_dropped_with_one_warning_and_never_dispatched(fake_native):
    log = fake_native(_wrong)
    q, k, v, cu_q, cu_k = _packed([3, 0, 5], [4, 2, 6])
    dropped = r"dropped 'fake' for cpu float32, head dim 16, packed-cross: it does not match the fp32 reference"
    with pytest.warns(RuntimeWarning, match=dropped + r" on the parity probe \(out max error") as record:
        out = _auto(q, k, v, cu_q, cu_k)
    assert len([w for w in record if "dropped" in str(w.message)]) == 1
    torch.testing.assert_close(out, _auto(q, k, v, cu_q, cu_k, backend="reference"), atol=1e-5, rtol=1e-5)
    probe_rows = sum(auto_varlen.PROBE_LENGTHS["packed-cross"][0])
    assert [entry for entry in log if entry[0] == "fake"] == [("fake", probe_rows)]  # the probe's call only
    q2, k2, v2, cu_q2, cu_k2 = _packed([7, 9, 20], [30, 1, 5])  # another bucket of the case: no probe, no warning
    _auto(q2, k2, v2, cu_q2, cu_k2)
    assert [entry for entry in log if entry[0] in ("probe", "measure")] == [("probe", ["fake"])]  # nothing left to time
    assert set(auto.auto_choices().values()) <= {"padded", "sdpa", "sdpa-math", "reference"}


def test_a_packed_choice_is_restored_from_the_cache_file(fake_native, tmp_path, monkeypatch):
    path = tmp_path / "attention_auto.json"
    monkeypatch.setenv(auto_cache.ENV_VAR, str(path))
    auto.clear_auto_cache()
    log = fake_native(_correct)
    q, k, v, cu_q, cu_k = _packed([4, 4], [4, 4])
    _auto(q, k, v, cu_q, cu_k, causal=True)
    saved = json.loads(path.read_text())
    assert [name for key, name in saved["choices"].items() if "packed-self" in key] == ["fake"]
    assert [names for key, names in saved["parity"].items() if "packed-self" in key] == [["fake", "padded"]]
    auto.clear_auto_cache()  # a new job: nothing in memory
    del log[:]
    _auto(*_packed([3, 4], [3, 4], seed=2), causal=True)  # same bucket: restored, neither probed nor timed
    assert log == [("fake", 7)]


@pytest.mark.filterwarnings("ignore:.*no eager choice for cpu float32, head dim 16, masked")
def test_under_torch_compile_nothing_is_probed_and_a_miss_runs_padded(fake_native, monkeypatch):
    log = fake_native(_correct)
    q, k, v, cu_q, cu_k = _packed([3, 5], [3, 5], grad=False)
    with monkeypatch.context() as tracing:
        tracing.setattr(torch.compiler, "is_compiling", lambda: True)  # what auto sees while torch.compile traces
        out = _auto(q, k, v, cu_q, cu_k)
    assert log == [] and not auto.auto_choices()
    torch.testing.assert_close(out, _auto(q, k, v, cu_q, cu_k, backend="reference"), atol=1e-5, rtol=1e-5)
    (missed,) = [key for key in auto.compile_misses() if isinstance(key, auto_varlen.PackedBucketKey)]
    assert missed.kind == "packed-self"
    with pytest.warns(RuntimeWarning, match=r"no eager choice for cpu float32, head dim 16, packed-self .* it runs "
                                            r"'padded' there"):
        auto.prepare(lambda: _auto(q, k, v, cu_q, cu_k))  # eager: probes and times
    del log[:]
    with monkeypatch.context() as tracing:
        tracing.setattr(torch.compiler, "is_compiling", lambda: True)
        _auto(*_packed([2, 4], [2, 4], grad=False))  # same bucket: the eager choice, nothing probed
    assert log == [("fake", 6)]


def test_under_ddp_packed_choices_are_agreed_and_a_kernel_dropped_on_another_rank_is_not_used(fake_native, monkeypatch):
    log = fake_native(_correct)
    monkeypatch.setattr(auto.auto_sync, "is_distributed", lambda: True)
    q, k, v, cu_q, cu_k = _packed([3, 5], [3, 5])
    _auto(q, k, v, cu_q, cu_k)
    assert ("fake", 8) not in log  # before the exchange every rank runs padded, whatever it measured
    (key,) = _packed_choices()
    assert pickle.loads(pickle.dumps(key)) == key  # all_gather_object pickles the tables
    other = {"choices": {key: "padded"}, "parity": {key.parity_key(): ["fake", "padded"]}}  # rank 1 chose padded
    monkeypatch.setattr(auto.auto_sync, "gather_tables", lambda local: [local, other])
    assert auto.sync_choices()[key] == "fake"  # rank 0's choice
    del log[:]
    _auto(q, k, v, cu_q, cu_k)
    assert log == [("fake", 8)]
    other["parity"][key.parity_key()] = ["padded"]  # 'fake' failed rank 1's probe: dropped on every rank
    assert auto.sync_choices()[key] == "padded"
    del log[:]
    _auto(q, k, v, cu_q, cu_k)
    assert ("fake", 8) not in log


@needs_interpreter
def test_triton_in_the_interpreter_is_probed_chosen_and_dispatched(monkeypatch):
    """The real varlen kernel as a candidate (tiny: the interpreter is slow): it passes the packed probe, wins
    the (faked) timing and runs the call, with the padded path's output and gradients."""
    monkeypatch.setattr(auto_varlen, "PROBE_LENGTHS", TINY_PROBE)
    monkeypatch.setattr(auto_varlen, "native_device", lambda device: True)
    monkeypatch.setattr(auto_varlen, "candidates", lambda args: ["padded", "triton"])
    monkeypatch.setattr(auto, "measure", lambda q, k, v, names, run, needs_grad: {"padded": 1.0, "triton": 0.1})
    used = []
    real = varlen_dispatch.NATIVE_VARLEN["triton"]
    monkeypatch.setitem(varlen_dispatch.NATIVE_VARLEN, "triton", lambda a: used.append(a.q.shape[0]) or real(a))
    q, k, v, cu_q, cu_k = _packed([2, 0, 5], [3, 2, 4])
    out = _auto(q, k, v, cu_q, cu_k, causal=True)
    assert used == [sum(TINY_PROBE["packed-cross"][0]), 7]  # the probe, then the call
    assert list(auto.auto_choices().values()) == ["triton"]
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    expected = _auto(q, k, v, cu_q, cu_k, causal=True, backend="reference")
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, torch.autograd.grad(expected.square().sum(), (q, k, v))):
        torch.testing.assert_close(got, want, atol=5e-5, rtol=5e-5)


@pytest.mark.parametrize("kind,causal", [("packed-self", False), ("packed-cross", True)])
def test_the_packed_probe_passes_the_padded_path_and_catches_a_cross_sample_leak(kind, causal):
    args = auto_varlen.probe_args(torch.device("cpu"), torch.float32, 16, causal=causal, kind=kind)
    run = varlen_dispatch.run_packed
    assert auto_varlen.check_candidates(["padded", "reference", "sdpa"], args, run) == dict.fromkeys(
        ["padded", "reference", "sdpa"])

    def leaks(name, a):  # every query sees every key of the batch: attention crossing samples
        whole = torch.tensor([0, a.q.shape[0]]), torch.tensor([0, a.k.shape[0]])
        one = replace(a, cu_seqlens_q=whole[0], cu_seqlens_k=whole[1], max_seqlen_q=a.q.shape[0],
                      max_seqlen_k=a.k.shape[0])
        return run("reference", one)

    assert "max error" in auto_varlen.check_candidates(["leaks"], args, leaks)["leaks"]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("kind,causal", [("packed-self", False), ("packed-self", True), ("packed-cross", False),
                                         ("packed-cross", True)])
def test_on_cuda_every_native_candidate_passes_the_packed_probe(dtype, kind, causal):
    """On a GPU, no varlen kernel is silently dropped: triton and flex match the fp32 reference packed."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    args = auto_varlen.probe_args(torch.device("cuda"), dtype, 64, causal=causal, kind=kind)
    names = [name for name in auto_varlen.candidates(args) if name != "padded"]
    assert {"triton", "flex"} <= set(names)
    assert auto_varlen.check_candidates(names, args, varlen_dispatch.run_packed) == dict.fromkeys(names)


@pytest.mark.slow  # torch.compile with graph breaks: ~12 s on 2 shared cores
def test_a_compiled_packed_call_uses_the_eager_choice_without_probing(fake_native):
    """Real ``torch.compile`` (the offsets' host check breaks the graph; ``auto`` is traced): after one eager
    call the compiled call in the same bucket runs the eager choice and probes or times nothing."""
    log = fake_native(_correct)
    q, k, v, cu_q, cu_k = _packed([3, 5], [4, 4], grad=False)
    auto.prepare(lambda: _auto(q, k, v, cu_q, cu_k))
    del log[:]
    compiled = torch.compile(lambda q, k, v, cu_q, cu_k: _auto(q, k, v, cu_q, cu_k), backend="eager")
    q2, k2, v2, cu_q2, cu_k2 = _packed([2, 4], [3, 4], grad=False, seed=1)
    out = compiled(q2, k2, v2, cu_q2, cu_k2)
    assert log == [("fake", 6)] and auto.compile_misses() == []
    torch.testing.assert_close(out, _auto(q2, k2, v2, cu_q2, cu_k2, backend="reference"), atol=1e-5, rtol=1e-5)


def test_the_packed_probe_runs_under_inference_mode(fake_native):
    log = fake_native(_correct)
    q, k, v, cu_q, cu_k = _packed([3, 0, 5], [4, 2, 6], grad=False)
    with torch.inference_mode():
        out = _auto(q, k, v, cu_q, cu_k)
    assert ("probe", ["fake"]) in log and log[-1][0] == "fake"
    torch.testing.assert_close(out, _auto(q, k, v, cu_q, cu_k, backend="reference"), atol=1e-5, rtol=1e-5)

"""``backend="auto"``: the fastest backend that is correct on this device, checked, measured and kept.

For each *case* (device, dtype, head dim, mask or not, causal, self- or cross-attention shape) the
first call runs a parity probe (:mod:`polyfuse.attention.auto_probe`): every candidate against the
fp32 reference on a small input, forward and backward; a candidate that raises or misses the bound
is dropped for the case with one warning naming it. Then the first call in a *shape bucket* (the
case, grad or not, dropout or not, and power-of-two buckets of B*H, Lq and Lk) times the passing
candidates on the real inputs (forward, or forward + backward when gradients are needed) and
caches the winner; later calls in the bucket dispatch straight to it.

SDPA is the baseline: another backend is chosen only when it beats SDPA by ``MARGIN`` in the
measurement and again in a head-to-head re-measurement, so ``auto`` is never meaningfully slower
than calling SDPA with the same mask, even when a busy machine disturbs one measurement.

Eligible backends: on CUDA ``triton`` (if Triton imports and the head dim fits), ``flex`` (no
dropout) and ``sdpa``; on CPU ``sdpa``, ``sdpa-math`` (SDPA pinned to its math kernel, whose backward
is sometimes faster on 2 cores) and ``reference``, never ``triton`` (the interpreter is for tests) or
``flex`` (no CPU backward; seconds of compilation per shape). ``reference`` and ``sdpa-math`` hold the
``Lq x Lk`` scores: above ``QUADRATIC_MAX_BYTES`` of fp32 scores they are neither timed nor dispatched
to (they still serve as oracles on the small probe), so a long sequence's first call costs about SDPA's.

Packed (``cu_seqlens``) calls are chosen the same way and kept in the same tables, between ``padded``
(their baseline) and the native varlen kernels (:mod:`polyfuse.attention.auto_varlen`). Choices
survive the process in a JSON file (:mod:`polyfuse.attention.auto_cache`, keyed by device name and
library versions; ``POLYFUSE_AUTO_CACHE=off`` disables it).

``torch.compile``: nothing is probed or timed while tracing. A call uses the choice made eagerly for
its bucket (or the nearest bucket of the same case), else ``sdpa``, reported with a warning at the
next eager call or :func:`sync_choices`. :func:`prepare` makes the choices eagerly first; the training
callback (:class:`polyfuse.training.performance.PerformanceKnobs`) compiles only after the first,
eager, training batch.

DDP: every rank runs the same kernels (:mod:`polyfuse.attention.auto_sync`). Until the ranks have
exchanged their tables with :func:`sync_choices` a rank dispatches ``sdpa``; afterwards the agreed
table (rank 0's choices first), and for a bucket no rank had measured at the last exchange the
nearest agreed bucket of the same case, else ``sdpa``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from polyfuse.attention import auto_cache, auto_probe, auto_sync
from polyfuse.attention.auto_keys import BucketKey, Key, bucket_key

MARGIN = 0.05
REPEATS = 3
MAX_REPEATS = 25
MIN_SECONDS_PER_BACKEND = 0.05
#: fp32 ``B*H*Lq*Lk`` scores above which the quadratic-memory candidates are skipped
QUADRATIC_MAX_BYTES = 1 << 26
QUADRATIC = ("reference", "sdpa-math")

RunBackend = Callable[[str, Tensor, Tensor, Tensor], Tensor]
Verdicts = dict[str, str | None]  # backend -> None (passed the parity probe) or why it failed


_choices: dict[Key, str] = {}         # this process's decisions (padded and packed buckets)
_agreed: dict[Key, str] = {}          # the table every DDP rank shares (sync_choices)
_parity: dict[tuple, list[str]] = {}  # parity key -> backends that passed the probe
_compile_misses: list[Key] = []       # buckets that had no eager choice while tracing
_warned_misses: set[Key] = set()
_file: list[auto_cache.ChoiceFile | None] = []  # [] = not opened yet


def _scores_bytes(q: Tensor, k: Tensor) -> int:
    return q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * 4


def triton_eligible(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether Triton imports and its kernels take these inputs (device, dtype, head dim; padded or packed)."""
    try:
        from polyfuse.attention.kernels import check_supported
    except ImportError:
        return False
    try:
        check_supported(q, k, v)
    except (RuntimeError, ValueError):
        return False
    return True


def candidates(q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> list[str]:
    """Backends that can run this case correctly on this device, SDPA first."""
    if q.device.type == "cuda":
        names = ["sdpa"]
        if triton_eligible(q, k, v):
            names.append("triton")
        if dropout_p == 0.0:
            names.append("flex")
        return names
    names = ["sdpa", "sdpa-math", "reference"]
    if _scores_bytes(q, k) > QUADRATIC_MAX_BYTES:
        names = [name for name in names if name not in QUADRATIC]
    return names


def _timed_call(name: str, run: RunBackend, inputs: list[Tensor], grad_out: Tensor | None) -> float:
    """Seconds of one call (plus its backward when ``grad_out`` is given)."""
    cuda = inputs[0].device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(inputs[0].device)
    start = time.perf_counter()
    with torch.set_grad_enabled(grad_out is not None):
        out = run(name, *inputs)
        if grad_out is not None:
            torch.autograd.grad(out, inputs, grad_out)
    if cuda:
        torch.cuda.synchronize(inputs[0].device)
    return time.perf_counter() - start


def measure(q: Tensor, k: Tensor, v: Tensor, names: list[str], run: RunBackend, needs_grad: bool) -> dict[str, float]:
    """Best seconds per call of each backend in ``names``; a backend that fails gets ``inf``.

    Each backend runs once to warm up (compilation, autotuning, caches), then the backends take turns
    (so a change in machine load hits all of them alike) for ``REPEATS`` rounds, or more for fast
    calls: until each backend had ``MIN_SECONDS_PER_BACKEND`` or ``MAX_REPEATS`` rounds.
    """
    inputs = [t.detach().requires_grad_(needs_grad) for t in (q, k, v)]
    grad_out = q.new_ones(q.shape[:-1] + v.shape[-1:]) if needs_grad else None
    timings = {name: float("inf") for name in names}
    with auto_probe.isolated(q.device):  # no trace in the caller's RNG stream or saved-tensor hooks
        working = []
        for name in names:
            try:
                _timed_call(name, run, inputs, grad_out)
                working.append(name)
            except (RuntimeError, ValueError, NotImplementedError, torch.OutOfMemoryError):
                pass
        rounds, spent = 0, 0.0
        while rounds < REPEATS or (spent < MIN_SECONDS_PER_BACKEND * len(working) and rounds < MAX_REPEATS):
            for name in working:
                seconds = _timed_call(name, run, inputs, grad_out)
                timings[name] = min(timings[name], seconds)
                spent += seconds
            rounds += 1
    return timings


def pick(timings: dict[str, float], baseline: str = "sdpa") -> str:
    """The fastest backend, but ``baseline`` (SDPA) unless another beats it by ``MARGIN``."""
    best = min(timings, key=timings.get)
    if baseline in timings and timings[best] > (1.0 - MARGIN) * timings[baseline]:
        return baseline
    return best


def _open_file() -> auto_cache.ChoiceFile | None:
    if not _file:
        path = auto_cache.cache_path()
        _file.append(None if path is None else auto_cache.ChoiceFile(path))
    return _file[0]


def _warn(message: str) -> None:
    warnings.warn(f"attention backend 'auto': {message}", RuntimeWarning, stacklevel=4)


def _probe_padded(key: BucketKey, device: torch.device) -> Verdicts:
    """The parity probe of a padded case: each non-reference candidate's verdict (None = passed)."""
    args = auto_probe.probe_args(device, key.dtype, key.head_dim, has_mask=key.has_mask, causal=key.causal,
                                 shape_kind=key.shape_kind)
    probed = [name for name in candidates(args.q, args.k, args.v, 0.0) if name != "reference"]
    return auto_probe.check_candidates(probed, args, auto_probe.run_backend)


def passing_backends(key: Key, device: torch.device, probe: Callable[[], Verdicts] | None = None) -> list[str]:
    """The backends that passed the parity probe for ``key``'s case, probing on first use with ``probe()``
    (the candidates' verdicts, None = passed; default: the padded probe); ``key.oracle`` always passes.
    A failing backend is reported with one warning."""
    case = key.parity_key()
    if case in _parity:
        return _parity[case]
    stored = _open_file()
    entry = auto_cache.entry_key(device, case) if stored is not None else ""
    names = stored.parity(entry) if stored is not None else None
    if names is None:
        verdicts = _probe_padded(key, device) if probe is None else probe()
        for name, reason in verdicts.items():
            if reason is not None:
                _warn(f"dropped {name!r} for {key.describe()}: it does not match the fp32 reference "
                      f"on the parity probe ({reason})")
        names = [name for name, reason in verdicts.items() if reason is None] + [key.oracle]
        if stored is not None and verdicts:
            stored.save({}, {entry: names})
    _parity[case] = names
    return names


def decide(key: Key, device: torch.device, passing: list[str], eligible: list[str],
           timings: Callable[[list[str]], dict[str, float]]) -> str:
    """``key``'s choice: restored from the cache file, else the fastest of the ``eligible`` backends that
    are ``passing`` (``timings(names)`` measures them), confirmed head to head against ``key.baseline``
    (and saved to the file when anything was timed)."""
    stored = _open_file()
    entry = auto_cache.entry_key(device, key) if stored is not None else ""
    restored = stored.choice(entry) if stored is not None else None
    if restored is not None and restored in passing:
        return restored
    names = [name for name in eligible if name in passing] or [key.oracle]
    if len(names) == 1:
        return names[0]
    winner = pick(timings(names), key.baseline)
    if winner != key.baseline:  # confirm head-to-head: one lucky measurement on a busy machine must not stick
        winner = pick(timings([key.baseline, winner]), key.baseline)
    if stored is not None:
        stored.save({entry: winner}, {})
    return winner


def _nearest(table: dict[Key, str], key: Key) -> str | None:
    """``table``'s choice for ``key``, else for the nearest bucket (in powers of two) of the same case."""
    if key in table:
        return table[key]
    same = [other for other in table if other.case() == key.case()]
    if not same:
        return None

    def distance(other: Key) -> tuple:
        gaps = [abs(a.bit_length() - b.bit_length()) for a, b in zip(other.sizes(), key.sizes())]
        return (sum(gaps), other.sizes())

    return table[min(same, key=distance)]


def safe_choice(key: Key, passing: list[str] | None) -> str:
    """``key.baseline`` (``sdpa``), unless the parity probe dropped it for the case: then ``key.oracle``."""
    return key.baseline if passing is None or key.baseline in passing else key.oracle


def _checked(name: str, key: Key, fits: Callable[[str], bool]) -> str:
    """``name``, unless it failed this process's parity probe for the case (an agreed or neighbouring
    choice), or does not ``fit`` this call (see :func:`choose_backend`)."""
    passing = _parity.get(key.parity_key())
    if (passing is not None and name not in passing) or not fits(name):
        return safe_choice(key, passing)
    return name


def _flush_compile_misses() -> None:
    for key in _compile_misses:
        if key not in _warned_misses:
            _warned_misses.add(key)
            _warn(f"no eager choice for {key.describe()} ({key.describe_sizes()}) when torch.compile traced it: "
                  f"it runs {key.baseline!r} there; call polyfuse.attention.auto.prepare() (one eager step) "
                  "before compiling")
    _compile_misses.clear()


def choose(key: Key, make_choice: Callable[[], str], fits: Callable[[str], bool] = lambda name: True) -> str:
    """The backend for a call of bucket ``key``: ``make_choice()`` (probe and time) on the first call of
    the bucket, except under ``torch.compile`` (the nearest eager choice, else ``key.baseline``); under DDP
    the agreed choice (see module docstring); never a backend that failed the probe or does not ``fit``."""
    table = _agreed if auto_sync.is_distributed() else _choices
    if torch.compiler.is_compiling():
        chosen = _nearest(table, key)
        if chosen is None:
            if key not in _compile_misses:
                _compile_misses.append(key)
            chosen = key.baseline
        return _checked(chosen, key, fits)
    _flush_compile_misses()
    if key not in _choices:
        _choices[key] = make_choice()
    chosen = _nearest(table, key) if table is _agreed else _choices[key]
    return _checked(safe_choice(key, _parity.get(key.parity_key())) if chosen is None else chosen, key, fits)


def choose_backend(q: Tensor, k: Tensor, v: Tensor, *, has_mask: bool, causal: bool, dropout_p: float,
                   run: RunBackend) -> str:
    """The backend ``auto`` dispatches this call to (probing and measuring on the first call of its bucket,
    except under ``torch.compile``; under DDP the agreed choice, see module docstring).

    ``run(name, q, k, v)`` must call the named backend with this call's mask and options. A quadratic-memory
    choice made for a smaller call of the bucket (or a neighbouring bucket) is not reused above
    ``QUADRATIC_MAX_BYTES``.
    """
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    key = bucket_key(q, k, has_mask, causal, dropout_p, needs_grad)

    def make_choice() -> str:
        passing = passing_backends(key, q.device)
        return decide(key, q.device, passing, candidates(q, k, v, dropout_p),
                      lambda names: measure(q, k, v, names, run, key.needs_grad))

    return choose(key, make_choice, lambda name: name not in QUADRATIC or _scores_bytes(q, k) <= QUADRATIC_MAX_BYTES)


def sync_choices() -> dict[Key, str]:
    """Give every DDP rank the same table of choices (rank 0's first; see :mod:`auto_sync`) and
    return it. A collective under DDP: every rank must call it at the same point (the training
    callback does after the first training batch and at each epoch end). Without DDP it only reports
    the buckets that ran ``sdpa`` under ``torch.compile`` for want of an eager choice."""
    _flush_compile_misses()
    if not auto_sync.is_distributed():
        return dict(_choices)
    merged = auto_sync.merge_tables(auto_sync.gather_tables({"choices": dict(_choices), "parity": dict(_parity)}),
                                    lambda key: key.parity_key(), safe_choice)
    _parity.update(merged["parity"])
    _choices.update(merged["choices"])
    _agreed.clear()
    _agreed.update(merged["choices"])
    return dict(_agreed)


def prepare(run_once: Callable[[], object] | None = None) -> dict[Key, str]:
    """Make ``auto``'s choices eagerly, before ``torch.compile`` traces: call ``run_once()`` (e.g. one
    forward and backward on an example batch) outside compilation, then :func:`sync_choices`.
    Returns the choices (under DDP: the table every rank shares)."""
    if torch.compiler.is_compiling():
        raise RuntimeError("polyfuse.attention.auto.prepare() must run eagerly, before torch.compile traces")
    if run_once is not None:
        run_once()
    return sync_choices()


def auto_choices() -> dict[Key, str]:
    """A copy of this process's decisions, bucket key -> backend name."""
    return dict(_choices)


def compile_misses() -> list[Key]:
    """Buckets that ran ``sdpa`` under ``torch.compile`` for want of an eager choice, not yet reported."""
    return list(_compile_misses)


def clear_auto_cache() -> None:
    """Forget every decision, probe result and agreed table in memory and re-read the cache file's
    location (``POLYFUSE_AUTO_CACHE``) at the next call; the file itself is left as it is."""
    for state in (_choices, _agreed, _parity, _warned_misses):
        state.clear()
    del _compile_misses[:], _file[:]

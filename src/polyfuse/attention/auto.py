"""``backend="auto"``: the fastest correct backend for this device and case, by measurement.

The first call in a *shape bucket* times each eligible backend on the real inputs (forward, or
forward + backward when gradients are needed), in the same process, and caches the winner; later
calls in the bucket dispatch straight to it. A bucket is (device, dtype, grad or not, mask or not,
causal, dropout or not, head dim, and power-of-two buckets of B*H, Lq and Lk).

SDPA is the baseline: another backend is chosen only when it beats SDPA by ``MARGIN`` in the
measurement and again in a head-to-head re-measurement, so ``auto`` is never meaningfully slower
than calling SDPA with the same mask, even when a busy machine disturbs one measurement.

Eligible backends:
- CUDA: ``triton`` (if Triton imports and the head dim fits), ``flex`` (no dropout), ``sdpa``.
- CPU: ``sdpa``, ``sdpa-math`` (SDPA pinned to its math kernel, whose backward is sometimes faster
  than the fused CPU kernel's on 2 cores) and ``reference`` (when its fp32 ``Lq x Lk`` scores fit
  ``REFERENCE_MAX_BYTES``).
  Never ``triton`` (the interpreter is for tests) and never ``flex`` (no CPU backward, and each new
  shape costs seconds of compilation).
Inside ``torch.compile`` nothing is measured: a cached choice is reused, else ``sdpa`` on CPU and
``triton`` on CUDA when eligible.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

MARGIN = 0.05
REPEATS = 3
MAX_REPEATS = 25
MIN_SECONDS_PER_BACKEND = 0.05
REFERENCE_MAX_BYTES = 1 << 29

_choices: dict[tuple, str] = {}

RunBackend = Callable[[str, Tensor, Tensor, Tensor], Tensor]


def _bucket(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def bucket_key(q: Tensor, k: Tensor, has_mask: bool, causal: bool, dropout_p: float, needs_grad: bool) -> tuple:
    """The cache key of a call (see module docstring)."""
    batch, heads, lq, head_dim = q.shape
    return (q.device.type, q.device.index, q.dtype, needs_grad, has_mask, causal, dropout_p > 0.0, head_dim,
            _bucket(batch * heads), _bucket(lq), _bucket(k.shape[2]))


def _triton_eligible(q: Tensor, k: Tensor, v: Tensor) -> bool:
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
        if _triton_eligible(q, k, v):
            names.append("triton")
        if dropout_p == 0.0:
            names.append("flex")
        return names
    names = ["sdpa", "sdpa-math"]
    scores_bytes = q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * 4
    if scores_bytes <= REFERENCE_MAX_BYTES:
        names.append("reference")
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


def _keep(tensor: Tensor) -> Tensor:
    """Identity pack / unpack hook (see :func:`measure`)."""
    return tensor


def measure(q: Tensor, k: Tensor, v: Tensor, names: list[str], run: RunBackend, needs_grad: bool) -> dict[str, float]:
    """Best seconds per call of each backend in ``names``; a backend that fails gets ``inf``.

    Each backend runs once to warm up (compilation, autotuning, caches), then the backends take turns
    (so a change in machine load hits all of them alike) for ``REPEATS`` rounds, or more for fast
    calls: until each backend had ``MIN_SECONDS_PER_BACKEND`` or ``MAX_REPEATS`` rounds.
    """
    inputs = [t.detach().requires_grad_(needs_grad) for t in (q, k, v)]
    grad_out = q.new_ones(q.shape[:-1] + v.shape[-1:]) if needs_grad else None
    devices = [q.device] if q.device.type == "cuda" else []
    timings = {name: float("inf") for name in names}
    # Measuring must not shift the caller's RNG stream, nor feed the caller's saved-tensor hooks:
    # under activation checkpointing (torch.utils.checkpoint, non-reentrant) the first forward
    # packs every saved tensor through the checkpoint's hooks and the recomputation (which finds the
    # cached choice and measures nothing) must save the same ones. Innermost hooks win, so identity
    # hooks keep the trial calls' tensors to themselves.
    with torch.random.fork_rng(devices=devices), torch.autograd.graph.saved_tensors_hooks(_keep, _keep):
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


def pick(timings: dict[str, float]) -> str:
    """The fastest backend, but SDPA unless another beats it by ``MARGIN``."""
    best = min(timings, key=timings.get)
    if "sdpa" in timings and timings[best] > (1.0 - MARGIN) * timings["sdpa"]:
        return "sdpa"
    return best


def choose_backend(q: Tensor, k: Tensor, v: Tensor, *, has_mask: bool, causal: bool, dropout_p: float,
                   run: RunBackend) -> str:
    """The backend ``auto`` dispatches this call to (measuring on the first call of its bucket).

    ``run(name, q, k, v)`` must call the named backend with this call's mask and options.
    """
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    key = bucket_key(q, k, has_mask, causal, dropout_p, needs_grad)
    if key in _choices:
        return _choices[key]
    names = candidates(q, k, v, dropout_p)
    if torch.compiler.is_compiling() or len(names) == 1:
        return "triton" if "triton" in names else "sdpa"
    winner = pick(measure(q, k, v, names, run, needs_grad))
    if winner != "sdpa":  # confirm head-to-head: one lucky measurement on a busy machine must not stick
        winner = pick(measure(q, k, v, ["sdpa", winner], run, needs_grad))
    _choices[key] = winner
    return winner


def auto_choices() -> dict[tuple, str]:
    """A copy of the cached decisions, bucket key -> backend name."""
    return dict(_choices)


def clear_auto_cache() -> None:
    """Forget every measured decision (the next call in each bucket measures again)."""
    _choices.clear()

"""``auto``'s parity probe: every candidate backend against the fp32 reference, forward and backward.

Before ``backend="auto"`` times anything for a case (device, dtype, head dim, mask or not, causal,
self- or cross-attention shape), it runs each candidate once on a small probe input of that case
and compares the output and the q, k, v gradients with :func:`reference_attention` in fp32. The
judgement is FlashAttention's (and ``tests/attention/test_gpu.py``'s): a candidate may be at most
twice as far from fp32 as plain PyTorch attention computed in the same low precision, plus a small
floor per dtype. A candidate that raises or misses that bound is not a candidate for the case.

The probe has ``PROBE_BATCH`` samples of ``PROBE_LEN`` keys (more than one kernel block), and with a
mask: one sample with holes in its keys (not a prefix), one with a short prefix and one absent (no
key at all: its output and gradients must be zeros, never NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from polyfuse.attention.args import AttentionArgs
from polyfuse.attention.reference import reference_attention

PROBE_BATCH = 3
PROBE_HEADS = 2
PROBE_LEN = 150
PROBE_SHORT_LEN = 90
#: absolute error allowed on top of twice the low-precision PyTorch error
FLOORS = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}

RunArgs = Callable[[str, AttentionArgs], Tensor]
Oracle = Callable[[AttentionArgs], Tensor]


def _keep(tensor: Tensor) -> Tensor:
    """Identity pack / unpack hook (see :func:`isolated`)."""
    return tensor


@contextmanager
def isolated(device: torch.device) -> Iterator[None]:
    """Trial calls (probes, timings) that leave no trace in the caller's computation.

    They must not shift the caller's RNG stream, nor feed the caller's saved-tensor hooks: under
    activation checkpointing (non-reentrant) the first forward packs every saved tensor through the
    checkpoint's hooks and the recomputation (which finds the cached choice) must save the same ones;
    innermost hooks win, so identity hooks keep the trial tensors to themselves. They run with
    gradients on and autocast off, whatever the caller's mode (``no_grad``, ``inference_mode``).
    """
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.autograd.graph.saved_tensors_hooks(_keep, _keep), \
            torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
        yield


def probe_lengths(shape_kind: str) -> tuple[int, int]:
    """``(Lq, Lk)`` of the probe for a shape kind: ``"self"`` (Lq == Lk), ``"q<k"`` or ``"q>k"``."""
    if shape_kind == "self":
        return PROBE_LEN, PROBE_LEN
    return (PROBE_SHORT_LEN, PROBE_LEN) if shape_kind == "q<k" else (PROBE_LEN, PROBE_SHORT_LEN)


def probe_args(device: torch.device, dtype: torch.dtype, head_dim: int, *, has_mask: bool, causal: bool,
               shape_kind: str, seed: int = 0) -> AttentionArgs:
    """The probe call of a case (see module docstring); the same numbers on every device."""
    lq, lk = probe_lengths(shape_kind)
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode(False):  # normal tensors, even when the caller evaluates under inference_mode
        q, k, v = (torch.randn(PROBE_BATCH, PROBE_HEADS, length, head_dim, generator=gen).to(device, dtype)
                   for length in (lq, lk, lk))
        mask = None
        if has_mask:
            mask = torch.rand(PROBE_BATCH, lk, generator=gen) > 0.3  # sample 0: holes, not a prefix
            mask[0, 0] = True
            mask[1] = torch.arange(lk) < lk // 3                       # sample 1: a short prefix
            mask[2] = False                                            # sample 2: absent
            mask = mask.to(device)
    return AttentionArgs(q, k, v, mask, causal=causal)


def lowp_attention(args: AttentionArgs) -> Tensor:
    """Plain PyTorch attention with matmuls in the input dtype and an fp32 softmax (the error baseline)."""
    scores = (args.q @ args.k.transpose(-1, -2)).float() * args.softmax_scale
    allowed = args.allowed()
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, -1).nan_to_num(0.0)
    return probs.to(args.q.dtype) @ args.v


def _forward_backward(fn: Callable[[AttentionArgs], Tensor], args: AttentionArgs, grad_out: Tensor) -> list[Tensor]:
    """``[out, dq, dk, dv]`` of ``fn`` on fresh leaves (a gradient that does not reach a leaf is zeros)."""
    leaves = [t.detach().requires_grad_() for t in (args.q, args.k, args.v)]
    out = fn(args.with_qkv(*leaves))
    grads = torch.autograd.grad(out, leaves, grad_out.to(out.dtype), allow_unused=True)
    return [out, *(torch.zeros_like(leaf) if grad is None else grad for leaf, grad in zip(leaves, grads))]


def _mismatch(got: list[Tensor], exact: list[Tensor], lowp: list[Tensor], floor: float) -> str | None:
    """Why ``got`` is not as accurate as the low-precision baseline, or None."""
    for label, mine, ref, base in zip(("out", "dq", "dk", "dv"), got, exact, lowp):
        if mine.shape != ref.shape:
            return f"{label} has shape {tuple(mine.shape)}, expected {tuple(ref.shape)}"
        if not bool(torch.isfinite(mine).all()):
            return f"{label} has NaN/inf"
        err = (mine.float() - ref).abs().max().item()
        limit = 2 * (base.float() - ref).abs().max().item() + floor
        if err > limit:
            return f"{label} max error {err:.2e} > {limit:.2e}"
    return None


def check_candidates(names: Sequence[str], args: AttentionArgs, run: RunArgs, query_mask: Tensor | None = None,
                     *, oracles: tuple[Oracle, Oracle] | None = None) -> dict[str, str | None]:
    """Each backend of ``names`` on the probe ``args``: ``None`` when it matches the fp32 reference
    forward and backward, else the reason (its exception, or the tensor and error that missed).

    ``query_mask`` ``(B, Lq)`` (``True`` = real query) compares only real query rows (the others are
    zeroed in every output): for packed calls, whose padded queries do not exist. ``oracles``: the
    ``(fp32 reference, low-precision baseline)`` functions of the args, instead of
    :func:`reference_attention` in fp32 and :func:`lowp_attention` (a packed probe brings its own).
    """
    keep = None if query_mask is None else query_mask[:, None, :, None]

    def only_real(fn: Callable[[AttentionArgs], Tensor]) -> Callable[[AttentionArgs], Tensor]:
        return fn if keep is None else (lambda a: fn(a) * keep)

    with isolated(args.q.device):
        grad_out = torch.randn(args.q.shape[:-1] + args.v.shape[-1:], generator=torch.Generator().manual_seed(1))
        grad_out = grad_out.to(args.q.device)

        def exact_fn(a: AttentionArgs) -> Tensor:
            return reference_attention(a.with_qkv(a.q.float(), a.k.float(), a.v.float()))[0]

        exact_oracle, lowp_oracle = (exact_fn, lowp_attention) if oracles is None else oracles
        exact = [t.float() for t in _forward_backward(only_real(exact_oracle), args, grad_out)]
        lowp = _forward_backward(only_real(lowp_oracle), args, grad_out)
        floor = FLOORS.get(args.q.dtype, 1e-2)
        verdicts: dict[str, str | None] = {}
        for name in names:
            try:
                got = _forward_backward(only_real(lambda a, name=name: run(name, a)), args, grad_out)
            except Exception as error:  # noqa: BLE001 - any failure disqualifies the backend
                verdicts[name] = f"{type(error).__name__}: {str(error)[:200]}"
                continue
            verdicts[name] = _mismatch(got, exact, lowp, floor)
    return verdicts


def run_backend(name: str, args: AttentionArgs) -> Tensor:
    """The output of one named backend (never ``auto``) for ``args``."""
    from polyfuse.attention import _run_backend  # lazy: the package imports this module's user

    return _run_backend(name, args, False)[0]

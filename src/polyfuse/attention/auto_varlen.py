"""``backend="auto"`` for packed (``cu_seqlens``) calls: the padded fallback or a native varlen kernel,
checked, measured and kept by the same mechanism as padded calls (:mod:`polyfuse.attention.auto`).

Candidates of a packed call ``q (Tq, H, D)``, ``k, v (Tk, H, D)``:

- ``padded``: the padded fallback (:func:`polyfuse.attention.varlen_dispatch.padded_fallback`) through
  ``auto``'s own padded choice. The baseline (as ``sdpa`` is for padded calls): another candidate is
  chosen only when it beats it by :data:`polyfuse.attention.auto.MARGIN`, twice (the head-to-head
  re-measurement), and the safe choice wherever a choice is missing or was dropped.
- CUDA only: ``triton`` (the fused varlen kernels, when Triton imports and the head dim fits) and
  ``flex`` (the document mask; not with dropout). On CPU a packed call takes ``padded`` without any probe
  or timing (never the interpreter, never flex: as for padded calls), so CPU behaviour is unchanged.

The *case* of a packed call is (device, dtype, head dim, causal, ``packed-self`` when the query and key
offsets are equal, else ``packed-cross``); its first use runs a parity probe (:func:`probe_args`): each
native candidate on a small packed input of that case with unequal samples, one of them without keys,
forward and backward, against the padded fallback with the fp32 reference (the bound is
:func:`polyfuse.attention.auto_probe.check_candidates`'s, the low-precision baseline is plain attention
run sample by sample). A candidate that fails is dropped for the case with one warning naming it.

The *bucket* adds grad or not, dropout or not and power-of-two buckets of heads, samples, total query
and total key tokens; its first call times the passing candidates on the real inputs. Choices and probe
results live in ``auto``'s tables, so the JSON cache file, ``torch.compile`` (nothing probed or timed
while tracing: the nearest eager choice, else ``padded``), :func:`polyfuse.attention.auto.prepare` and
the DDP agreement (:func:`polyfuse.attention.auto.sync_choices`) cover packed calls too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from polyfuse.attention import auto, auto_probe
from polyfuse.attention.args import AttentionArgs
from polyfuse.attention.auto_keys import describe_case, size_bucket
from polyfuse.attention.varlen import cu_seqlens_from_lengths

PADDED = "padded"
#: ``kind -> (query lengths, key lengths)`` of the probe: samples longer than a kernel block, unequal,
#: one without keys (cross: its queries must get zeros) and, for cross-attention, Lq_b > Lk_b and Lq_b < Lk_b
PROBE_LENGTHS = {"packed-self": ([150, 61, 0], [150, 61, 0]), "packed-cross": ([90, 150, 40], [150, 37, 0])}

RunPacked = Callable[[str, AttentionArgs], Tensor]


class PackedBucketKey(NamedTuple):
    """What a packed call's choice is kept for: the case, then power-of-two buckets of the sizes."""

    device: str
    dtype: torch.dtype
    needs_grad: bool
    causal: bool
    dropout: bool
    head_dim: int
    kind: str  # "packed-self" (equal query and key offsets) or "packed-cross"
    heads: int
    samples: int
    tq: int
    tk: int
    baseline = PADDED  # class attributes (not fields): the default choice, and the one that always passes
    oracle = PADDED

    def case(self) -> tuple:
        """Everything but the sizes."""
        return tuple(self[:7])

    def sizes(self) -> tuple[int, int, int, int]:
        """The power-of-two buckets of heads, samples, total query and total key tokens."""
        return (self.heads, self.samples, self.tq, self.tk)

    def parity_key(self) -> tuple:
        """The probe's key: what correctness can depend on (not grad, dropout or sizes)."""
        return (self.device, self.dtype, self.causal, self.head_dim, self.kind)

    def describe(self) -> str:
        """The case in words (warnings)."""
        return f"{describe_case(self.device, self.dtype, self.head_dim)}{', causal' if self.causal else ''}, {self.kind}"

    def describe_sizes(self) -> str:
        return f"H~{self.heads}, B~{self.samples}, Tq~{self.tq}, Tk~{self.tk}"


def packed_bucket_key(args: AttentionArgs, needs_grad: bool) -> PackedBucketKey:
    """The cache key of a packed call (see module docstring)."""
    q, k = args.q, args.k
    same = args.cu_seqlens_q is args.cu_seqlens_k or (
        args.cu_seqlens_q.shape == args.cu_seqlens_k.shape and bool(torch.equal(args.cu_seqlens_q, args.cu_seqlens_k)))
    return PackedBucketKey(q.device.type, q.dtype, needs_grad, args.causal, args.dropout_p > 0.0, q.shape[-1],
                           "packed-self" if same else "packed-cross", size_bucket(q.shape[1]),
                           size_bucket(args.cu_seqlens_q.numel() - 1), size_bucket(q.shape[0]),
                           size_bucket(k.shape[0]))


def native_device(device: torch.device) -> bool:
    """Whether native varlen candidates may run on ``device``: CUDA only (tests patch this to run the
    decision logic on CPU)."""
    return device.type == "cuda"


def candidates(args: AttentionArgs) -> list[str]:
    """Backends that can run this packed call on its device, ``padded`` first."""
    names = [PADDED]
    if native_device(args.q.device):
        if auto.triton_eligible(args.q, args.k, args.v):
            names.append("triton")
        if args.dropout_p == 0.0:
            names.append("flex")
    return names


def probe_args(device: torch.device, dtype: torch.dtype, head_dim: int, *, causal: bool, kind: str,
               seed: int = 0) -> AttentionArgs:
    """The packed probe call of a case (:data:`PROBE_LENGTHS`); the same numbers on every device."""
    lengths_q, lengths_k = PROBE_LENGTHS[kind]
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode(False):  # normal tensors, even when the caller evaluates under inference_mode
        q, k, v = (torch.randn(sum(lengths), auto_probe.PROBE_HEADS, head_dim, generator=gen).to(device, dtype)
                   for lengths in (lengths_q, lengths_k, lengths_k))
        cu_q, cu_k = (cu_seqlens_from_lengths(torch.tensor(lengths)).to(device) for lengths in (lengths_q, lengths_k))
    cu_k = cu_k if kind == "packed-cross" else cu_q  # the same offsets object: what a self-attention call passes
    return AttentionArgs(q, k, v, causal=causal, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max(lengths_q),
                         max_seqlen_k=max(lengths_k))


def _exact(args: AttentionArgs) -> Tensor:
    """The fp32 reference of a packed call: the padded fallback with ``backend="reference"``."""
    from polyfuse.attention.varlen_dispatch import padded_fallback  # lazy: varlen_dispatch imports this module

    return padded_fallback(args.with_qkv(args.q.float(), args.k.float(), args.v.float()), "reference")


def _lowp(args: AttentionArgs) -> Tensor:
    """The low-precision error baseline, sample by sample (causal aligned to each sample's last key)."""
    cu_q, cu_k = args.cu_seqlens_q.tolist(), args.cu_seqlens_k.tolist()
    outs = []
    for b in range(len(cu_q) - 1):
        q = args.q[cu_q[b]:cu_q[b + 1]].transpose(0, 1)[None]                      # (1, H, Lq_b, D)
        k, v = (t[cu_k[b]:cu_k[b + 1]].transpose(0, 1)[None] for t in (args.k, args.v))
        sample = AttentionArgs(q, k, v, causal=args.causal, scale=args.scale)
        outs.append(auto_probe.lowp_attention(sample)[0].transpose(0, 1))
    return torch.cat(outs)


def check_candidates(names: list[str], args: AttentionArgs, run: RunPacked) -> dict[str, str | None]:
    """Each packed backend of ``names`` on the packed probe ``args``: ``None`` when it matches the fp32
    reference forward and backward, else the reason (see :func:`polyfuse.attention.auto_probe.check_candidates`)."""
    return auto_probe.check_candidates(names, args, run, oracles=(_exact, _lowp))


def choose_packed_backend(args: AttentionArgs, run: RunPacked) -> str:
    """The backend ``auto`` runs this packed call with: ``padded`` or a native varlen backend (probing and
    measuring on the first call of its bucket, except under ``torch.compile``; see module docstring).

    ``run(name, args)`` must run a packed call through ``name`` (``padded``: the padded fallback under ``auto``).
    """
    device = args.q.device
    if not native_device(device):
        return PADDED
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (args.q, args.k, args.v))
    key = packed_bucket_key(args, needs_grad)

    def probe() -> dict[str, str | None]:
        probe_call = probe_args(device, key.dtype, key.head_dim, causal=key.causal, kind=key.kind)
        probed = [name for name in candidates(probe_call) if name != PADDED]
        return check_candidates(probed, probe_call, run) if probed else {}

    def timings(names: list[str]) -> dict[str, float]:
        return auto.measure(args.q, args.k, args.v, names, lambda name, q, k, v: run(name, args.with_qkv(q, k, v)),
                            needs_grad)

    def make_choice() -> str:
        return auto.decide(key, device, auto.passing_backends(key, device, probe), candidates(args), timings)

    return auto.choose(key, make_choice)

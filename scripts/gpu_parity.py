"""Parity of every attention backend with the fp32 reference, padded and packed (varlen), forward and backward.

GPU (what ``scripts/gpu_check.sh`` runs)::

    python scripts/gpu_parity.py                       # bf16 and fp16, every backend, on CUDA

CPU smoke test (tiny sizes; ``flex`` has no CPU backward and ``triton`` runs only in the interpreter)::

    python scripts/gpu_parity.py --device cpu --tiny --dtypes fp32

Every call goes through the public :func:`polyfuse.attention.attention` (packed calls with
``cu_seqlens_q/k``, so a backend's native varlen path is what runs; ``auto`` probes, times and picks
among the padded fallback and the native paths, and its choices are printed after the table). The
judgement is the parity probe's (:func:`polyfuse.attention.auto_probe.check_candidates`): output and dq, dk, dv at most
twice as far from fp32 as plain PyTorch attention in the same precision, plus a floor. Prints a
markdown table and exits 1 when any backend fails any case: a failure is never a skip.

``POLYFUSE_PARITY_FAULT=<backend>`` scales that backend's output by 1.1 (to check that a wrong kernel
makes this script, and ``gpu_check.sh``, fail).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata

import torch
from torch import Tensor

from polyfuse.attention import AttentionArgs, attention, auto, available_backends
from polyfuse.attention.auto_probe import check_candidates
from polyfuse.attention.varlen import Packing

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FAULT_ENV = "POLYFUSE_PARITY_FAULT"


@dataclass(frozen=True)
class Case:
    """``shape`` = ``(B, H, Lq, Lk, D)``; ``mask``: ``none``, ``prefix`` (one absent sample) or ``holes``;
    ``packed``: the same tokens as a varlen call (prefix masks on queries and keys)."""

    name: str
    shape: tuple[int, int, int, int, int]
    mask: str = "prefix"
    causal: bool = False
    packed: bool = False


def cases(tiny: bool) -> list[Case]:
    """The multimodal shapes of ``tests/attention/test_gpu.py``, padded and packed; ``tiny``: small."""
    s = 8 if tiny else 1  # lengths divided by s

    def n(length: int) -> int:
        return max(3, length // s)

    d = 16 if tiny else 64
    return [
        Case("image-self padded", (4, 4, n(197), n(197), d)),
        Case("image->text padded", (4, 4, n(577), n(77), d)),
        Case("text->image holes", (4, 4, n(40), n(1025), d), mask="holes"),
        Case("decoder causal padded", (4, 4, n(77), n(77), d), causal=True),
        Case("long causal d128", (2, 4, n(2048), n(2048), 32 if tiny else 128), mask="none", causal=True),
        Case("text self packed", (4, 4, n(77), n(77), d), packed=True),
        Case("image->text packed", (4, 4, n(577), n(77), d), packed=True),
        Case("decoder causal packed", (4, 4, n(77), n(77), d), causal=True, packed=True),
    ]


def _lengths(length: int, batch: int, gen: torch.Generator) -> Tensor:
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    lengths[0] = length
    lengths[-1] = 0  # an absent modality
    return lengths


def make_call(case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> tuple[AttentionArgs, Tensor | None]:
    """The padded call and, for a packed case, the ``(B, Lq)`` query mask (None: every query is real)."""
    batch, heads, lq, lk, head_dim = case.shape
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, length, head_dim, generator=gen).to(device, dtype) for length in (lq, lk, lk))
    key_mask = query_mask = None
    if case.mask == "holes":
        key_mask = torch.rand(batch, lk, generator=gen) > 0.4
        key_mask[:, 0] = True
        key_mask[-1] = False
    elif case.mask == "prefix" or case.packed:
        k_lengths = _lengths(lk, batch, gen)
        key_mask = torch.arange(lk)[None, :] < k_lengths[:, None]
        if case.packed:
            q_lengths = k_lengths if lq == lk else _lengths(lq, batch, gen)
            query_mask = (torch.arange(lq)[None, :] < q_lengths[:, None]).to(device)
    key_mask = None if key_mask is None else key_mask.to(device)
    return AttentionArgs(q, k, v, key_mask, causal=case.causal), query_mask


def runner(query_mask: Tensor | None):
    """``run(name, args)``: the public ``attention`` with that backend, as a packed call when ``query_mask``
    is given (tokens packed with ``cu_seqlens``, the output padded back with zeros)."""
    fault = os.environ.get(FAULT_ENV)

    def run(name: str, args: AttentionArgs) -> Tensor:
        if query_mask is None:
            out = attention(args.q, args.k, args.v, args.key_padding_mask, causal=args.causal, backend=name)
        else:
            queries, keys = Packing.from_mask(query_mask, "queries"), Packing.from_mask(args.key_padding_mask, "keys")
            q = queries.unpad(args.q.transpose(1, 2))  # (B, H, L, D) -> (T, H, D)
            k, v = (keys.unpad(t.transpose(1, 2)) for t in (args.k, args.v))
            packed = attention(q, k, v, cu_seqlens_q=queries.cu_seqlens, cu_seqlens_k=keys.cu_seqlens,
                               max_seqlen_q=queries.max_seqlen, max_seqlen_k=keys.max_seqlen, causal=args.causal,
                               backend=name)
            out = queries.pad(packed).transpose(1, 2)
        return out * 1.1 if name == fault else out

    return run


def default_backends(device: str) -> list[str]:
    """Every backend on CUDA; on CPU those with a CPU backward (``triton`` only in the interpreter)."""
    if device == "cuda":
        return available_backends()
    names = ["reference", "sdpa", "auto"]
    return names + ["triton"] if os.environ.get("TRITON_INTERPRET") == "1" else names


def print_auto_choices() -> None:
    """The backend ``auto`` chose for each bucket it met in this run (padded and packed calls)."""
    choices = auto.auto_choices()
    if choices:
        print("\nauto's choices in this run:")
    for key, name in choices.items():
        print(f"- {key.describe()} ({key.describe_sizes()}{', grad' if key.needs_grad else ''}): {name}")


def print_versions() -> None:
    """Device, CUDA, torch, triton and polyfuse versions (the report's header)."""
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"no CUDA device ({platform.machine()} CPU)"
    print(f"device: {device}\ntorch: {torch.__version__} (CUDA {torch.version.cuda}), triton: {version('triton')}, "
          f"polyfuse: {version('polyfuse')}, python: {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="bf16,fp16")
    parser.add_argument("--backends", default=None, help="comma-separated (default: see default_backends)")
    parser.add_argument("--tiny", action="store_true", help="small shapes (CPU smoke test)")
    parser.add_argument("--versions", action="store_true", help="print the device and library versions, then exit")
    args = parser.parse_args(argv)
    if args.versions:
        print_versions()
        return 0
    backends = args.backends.split(",") if args.backends else default_backends(args.device)
    title = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"# attention parity vs fp32 reference on {title}, torch {torch.__version__}\n")
    print("| case | dtype | " + " | ".join(backends) + " |")
    print("|---|---|" + "---|" * len(backends))
    failures = []
    for dtype_name in args.dtypes.split(","):
        for case in cases(args.tiny):
            call, query_mask = make_call(case, DTYPES[dtype_name], args.device)
            verdicts = check_candidates(backends, call, runner(query_mask), query_mask=query_mask)
            cells = ["ok" if verdicts[name] is None else "**FAIL**" for name in backends]
            print(f"| {case.name} | {dtype_name} | " + " | ".join(cells) + " |", flush=True)
            failures += [f"{case.name} {dtype_name} {name}: {verdicts[name]}" for name in backends if verdicts[name]]
    if "auto" in backends:
        print_auto_choices()
    if failures:
        print(f"\n{len(failures)} FAILURES:\n" + "\n".join(f"- {line}" for line in failures))
        return 1
    print(f"\nall {len(backends)} backends match the fp32 reference (forward and backward)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Packed (varlen) attention against padded attention with a key padding mask, side by side.

GPU (the issue's measure: packed Triton vs the best padded backend, fwd+bwd bf16, goal >= 1.2x)::

    python scripts/bench_attention_varlen.py                  # bf16, batch 32
    python scripts/bench_attention_varlen.py --dtype fp16 --quick

Each case draws per-sample lengths (captions: mean ~11 of 40 tokens; the multimodal grid: keys in
``[Lk/4 .. Lk]`` or ``[Lk/2 .. Lk]``), builds the padded batch ``(B, H, L, D)`` + mask and the
packed one ``(T, H, D)`` + ``cu_seqlens`` from the same tensors, and times forward and
forward+backward of every contender (helpers of ``scripts/bench_attention.py``). Self-attention
cases pack queries and keys; cross-attention cases (image -> text) pack only the keys.

CPU (a check that it runs; timings there are not the point)::

    python scripts/bench_attention_varlen.py --batch 2 --heads 2 --quick --repeats 1
"""

from __future__ import annotations

import argparse
import sys

import torch

from bench_attention import DTYPES, Case, fmt, measure_all, multimodal_grid
from polyfuse.attention import attention
from polyfuse.attention.varlen import Packing


def caption_case(batch: int, heads: int, head_dim: int) -> Case:
    return Case("captions-self 40 (mean ~11)", batch, heads, 40, 40, head_dim, min_keys=1)


def draw_lengths(case: Case, device: str, gen: torch.Generator) -> torch.Tensor:
    """``(B,)`` key lengths: COCO-like caption lengths for the caption case, else uniform in [min_keys, Lk]."""
    if case.name.startswith("captions"):
        lengths = torch.normal(11.0, 3.0, (case.batch,), generator=gen, device=device).round()
        return lengths.clamp(1, case.lk).long()
    return torch.randint(case.min_keys, case.lk + 1, (case.batch,), device=device, generator=gen)


def inputs(case: Case, dtype: torch.dtype, device: str) -> tuple[list[torch.Tensor], list[torch.Tensor], dict]:
    """Padded ``q, k, v`` and their packed rows, and the packed call's offsets."""
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(case.batch, case.heads, n, case.head_dim, device=device, dtype=dtype, generator=gen)
               for n in (case.lq, case.lk, case.lk))
    key_lengths = draw_lengths(case, device, gen)
    self_attention = case.lq == case.lk
    query_lengths = key_lengths if self_attention else torch.full_like(key_lengths, case.lq)
    packing_q, packing_k = Packing.from_lengths(query_lengths, case.lq), Packing.from_lengths(key_lengths, case.lk)
    packed = [packing.unpad(t.transpose(1, 2)) for packing, t in ((packing_q, q), (packing_k, k), (packing_k, v))]
    offsets = dict(cu_seqlens_q=packing_q.cu_seqlens, cu_seqlens_k=packing_k.cu_seqlens,
                   max_seqlen_q=packing_q.max_seqlen, max_seqlen_k=packing_k.max_seqlen)
    return [q, k, v], packed, dict(offsets, mask=packing_k.mask())


def backends(device: str) -> list[str]:
    from polyfuse.attention.kernels.tuning import interpreting

    # auto: padded calls pick among sdpa/triton/flex, packed ones between padded and the native kernels
    names = ["triton", "sdpa", "flex", "auto"] if device == "cuda" else ["sdpa", "reference"]
    return names + (["triton"] if device == "cpu" and interpreting() else [])


def run_case(case: Case, dtype: torch.dtype, device: str, repeats: int) -> None:
    padded, packed, call = inputs(case, dtype, device)
    mask = call.pop("mask")
    real = int(mask.sum())
    print(f"\n### {case.name} (B={case.batch} H={case.heads} Lq={case.lq} Lk={case.lk} D={case.head_dim}; "
          f"{real} of {mask.numel()} keys real, {100 * (1 - real / mask.numel()):.0f}% padding)\n")
    padded_named = {f"padded-{name}": (lambda name: lambda q, k, v: attention(q, k, v, mask, backend=name))(name)
                    for name in backends(device)}
    packed_named = {f"packed-{name}": (lambda name: lambda q, k, v: attention(q, k, v, backend=name, **call))(name)
                    for name in backends(device)}
    results = measure_all(padded_named, *padded, device, repeats, backward=True)
    results.update(measure_all(packed_named, *packed, device, repeats, backward=True))
    best = min((r["fwdbwd"] for n, r in results.items() if n.startswith("padded-")), default=float("inf"))
    print("| contender | fwd ms | fwd+bwd ms | peak MiB | best padded fwd+bwd / this |\n|---|---|---|---|---|")
    for name, res in results.items():
        note = f" ({res['error']})" if "error" in res else ""
        ratio = "-" if res["fwdbwd"] == float("inf") else f"{best / res['fwdbwd']:.2f}"
        print(f"| {name}{note} | {fmt(res['fwd'])} | {fmt(res['fwdbwd'])} | {res['peak_mib']:.0f} | {ratio} |",
              flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="captions, one self and one cross case only")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = DTYPES[args.dtype] if device == "cuda" else torch.float32
    grid = multimodal_grid(args.batch, args.heads, args.head_dim)
    cases = [caption_case(args.batch, args.heads, args.head_dim)] + (grid[:1] + grid[3:4] if args.quick else grid)
    cases = [case for case in cases if not case.name.startswith("text->image")]  # queries are the padded side there
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"# packed vs padded attention on {name} (torch {torch.__version__}, {dtype})")
    for case in cases:
        run_case(case, dtype, device, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())

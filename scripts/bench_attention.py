"""Attention benchmark: polyfuse's backends against SDPA (each of its backends) and FlexAttention.

GPU (the numbers docs/benchmarks.md asks for)::

    python scripts/bench_attention.py                 # multimodal grid + FlashAttention-2 grid, bf16
    python scripts/bench_attention.py --grid multimodal --dtype fp16

prints, per case and contender, forward and forward+backward milliseconds, TFLOP/s, peak memory,
which SDPA backend PyTorch's own dispatch ran, and speedups of polyfuse over the best SDPA backend
that accepts the mask and over FlexAttention. TFLOP/s count the dense (padded) shape: forward
``4 B H Lq Lk D`` (allowed pairs only when causal), backward 2.5x forward (FlashAttention-2's
convention).

CPU (no GPU here)::

    python scripts/bench_attention.py --batch 4

says that the grid needs a GPU, runs the Triton kernels in the interpreter against the reference
(a correctness check, in a subprocess with TRITON_INTERPRET=1) and prints CPU timings of
reference / SDPA / auto (and compiled FlexAttention forward with ``--with-flex``) per multimodal
case: the measurements behind ``backend="auto"`` on CPU.

Packed (varlen) against padded attention: ``scripts/bench_attention_varlen.py`` (reuses these helpers).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from polyfuse.attention import AttentionArgs, attention, auto
from polyfuse.attention.flex import flex_padded_attention, padding_block_mask

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SDPA_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
Attend = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Case:
    """One benchmark shape; ``min_keys`` > 0 pads keys to random lengths in ``[min_keys, lk]``."""

    name: str
    batch: int
    heads: int
    lq: int
    lk: int
    head_dim: int
    causal: bool = False
    min_keys: int = 0

    def forward_flops(self) -> float:
        pairs = self.lq * self.lk
        if self.causal:
            shift = self.lk - self.lq
            pairs = sum(min(self.lk, max(0, i + shift + 1)) for i in range(self.lq))
        return 4.0 * self.batch * self.heads * pairs * self.head_dim


def multimodal_grid(batch: int, heads: int, head_dim: int) -> list[Case]:
    """Image self-attention with padding, image->text and text->image cross-attention, padded."""
    cases = [Case(f"image-self L={n}", batch, heads, n, n, head_dim, min_keys=n // 2) for n in (197, 577, 1025)]
    cases += [Case(f"image->text {n}x{t}", batch, heads, n, t, head_dim, min_keys=t // 4)
              for n in (197, 577, 1025) for t in (40, 77)]
    cases += [Case(f"text->image {t}x{n}", batch, heads, t, n, head_dim, min_keys=n // 2)
              for t in (40, 77) for n in (197, 577, 1025)]
    return cases


def fa2_grid() -> list[Case]:
    """FlashAttention-2 paper grid: 16k tokens per batch, hidden 2048, no padding."""
    return [Case(f"fa2 L={n} D={d}{' causal' if causal else ''}", 16384 // n, 2048 // d, n, n, d, causal=causal)
            for d in (64, 128) for causal in (False, True) for n in (512, 1024, 2048, 4096, 8192, 16384)]


def make_inputs(case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    gen = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(case.batch, case.heads, n, case.head_dim, device=device, dtype=dtype, generator=gen)
               for n in (case.lq, case.lk, case.lk))
    mask = None
    if case.min_keys:
        lengths = torch.randint(case.min_keys, case.lk + 1, (case.batch,), device=device, generator=gen)
        mask = torch.arange(case.lk, device=device)[None, :] < lengths[:, None]
    return q, k, v, mask


def contenders(case: Case, mask: Tensor | None, device: str) -> dict[str, Attend]:
    """Name -> ``fn(q, k, v) -> out`` for every contender of this case on this device."""
    causal = case.causal
    sdpa_mask = None if mask is None else mask[:, None, None, :]
    if causal and (mask is not None or case.lq != case.lk):
        tri = torch.ones(case.lq, case.lk, dtype=torch.bool, device=device).tril(case.lk - case.lq)
        sdpa_mask = tri if sdpa_mask is None else sdpa_mask & tri
    is_causal = causal and sdpa_mask is None

    def raw_sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask, is_causal=is_causal)

    def pinned(backend: SDPBackend) -> Attend:
        def run(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            with sdpa_kernel([backend]):
                return raw_sdpa(q, k, v)
        return run

    named: dict[str, Attend] = {}
    if device == "cuda":
        named["polyfuse-triton"] = lambda q, k, v: attention(q, k, v, mask, causal=causal, backend="triton")
        if mask is not None:
            lengths = mask.sum(-1)
            named["polyfuse-triton-lengths"] = lambda q, k, v: attention(q, k, v, key_lengths=lengths, causal=causal,
                                                                         backend="triton")
        named["polyfuse-auto"] = lambda q, k, v: attention(q, k, v, mask, causal=causal, backend="auto")
        named["sdpa-default"] = raw_sdpa
        for short, backend in SDPA_BACKENDS.items():
            if short == "math" and case.lq * case.lk > 4096 * 4096:
                continue  # the math backend materialises B*H*Lq*Lk scores
            named[f"sdpa-{short}"] = pinned(backend)
        block_mask = padding_block_mask(mask, case.lq, case.lk, causal=causal, device=torch.device(device))
        named["flex"] = lambda q, k, v: flex_padded_attention(AttentionArgs(q, k, v, mask, causal=causal))[0]
        named["flex-prebuilt-mask"] = lambda q, k, v: _compiled_flex(q, k, v, block_mask)
    else:
        named["reference"] = lambda q, k, v: attention(q, k, v, mask, causal=causal, backend="reference")
        named["sdpa"] = raw_sdpa
        named["sdpa-math"] = pinned(SDPBackend.MATH)
        named["polyfuse-auto"] = lambda q, k, v: attention(q, k, v, mask, causal=causal, backend="auto")
    return named


def _compiled_flex(q: Tensor, k: Tensor, v: Tensor, block_mask) -> Tensor:
    from polyfuse.attention.flex import _compiled_flex as compiled

    return compiled(q.device.type)(q, k, v, block_mask=block_mask)


def sdpa_dispatch_choice(case: Case, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> str:
    """Which SDPA backend PyTorch's own dispatch runs for this case (what ``sdpa-default`` is)."""
    attn_mask = None if mask is None else mask[:, None, None, :]
    try:
        choice = torch._fused_sdp_choice(q, k, v, attn_mask, 0.0, case.causal and mask is None, scale=None)
    except RuntimeError:
        return "none"
    names = {int(b.value): name for name, b in SDPBackend.__members__.items()}
    return names.get(int(choice), str(choice)).lower()


def _call(fn: Attend, leaves: list[Tensor], grad_out: Tensor, backward: bool) -> Callable[[], None]:
    """One timed step: forward (under no_grad), or forward + backward."""
    def forward() -> None:
        with torch.no_grad():
            fn(*leaves)

    def forward_backward() -> None:
        for leaf in leaves:
            leaf.grad = None
        fn(*leaves).backward(grad_out)

    return forward_backward if backward else forward


def _peak_mib(step: Callable[[], None]) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def measure_all(named: dict[str, Attend], q: Tensor, k: Tensor, v: Tensor, device: str, repeats: int,
                backward: bool) -> dict[str, dict]:
    """Per contender ``{"fwd": ms, "fwdbwd": ms, "peak_mib": MiB}`` (``inf`` where it refuses the case).

    GPU: median of CUDA-event timings per contender (``triton.testing.do_bench``). CPU: every contender
    runs once to warm up, then the contenders take turns ``repeats`` times and each keeps its fastest
    run, so a shared machine's load changes hit all of them alike.
    """
    results = {name: {"fwd": float("inf"), "fwdbwd": float("inf"), "peak_mib": float("nan")} for name in named}
    leaves = [t.detach().requires_grad_(backward) for t in (q, k, v)]
    grad_out = torch.randn_like(q)
    for mode in ("fwd", "fwdbwd") if backward else ("fwd",):
        steps = {}
        for name, fn in named.items():
            step = _call(fn, leaves, grad_out, mode == "fwdbwd")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if device == "cuda":
                        import triton.testing

                        results[name][mode] = float(triton.testing.do_bench(step, warmup=25, rep=max(100, 20 * repeats)))
                        if mode == "fwdbwd":
                            results[name]["peak_mib"] = _peak_mib(step)
                    else:
                        step()
                        steps[name] = step
            except (RuntimeError, NotImplementedError, ValueError) as error:  # a backend refusing the case
                results[name]["error"] = str(error).splitlines()[0][:60]
        for _ in range(repeats if device == "cpu" else 0):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                results[name][mode] = min(results[name][mode], (time.perf_counter() - start) * 1e3)
    return results


def rate(flops: float, ms: float, device: str) -> str:
    """TFLOP/s on GPU, GFLOP/s on CPU."""
    per_ms = 1e9 if device == "cuda" else 1e6
    return "-" if ms == float("inf") else f"{flops / ms / per_ms:.1f}"


def fmt(ms: float) -> str:
    return "-" if ms == float("inf") else f"{ms:.3f}"


def run_grid(cases: list[Case], dtype: torch.dtype, device: str, repeats: int, backward: bool) -> list[dict]:
    """Benchmark every contender of every case; print one markdown table per case and return the rows."""
    summaries = []
    for case in cases:
        q, k, v, mask = make_inputs(case, dtype, device)
        ran = sdpa_dispatch_choice(case, q, k, v, mask) if device == "cuda" else "cpu"
        print(f"\n### {case.name}  (B={case.batch} H={case.heads} Lq={case.lq} Lk={case.lk} D={case.head_dim} "
              f"{'padded' if mask is not None else 'unpadded'}{' causal' if case.causal else ''}; "
              f"SDPA dispatch runs: {ran})\n")
        unit = "TFLOP/s" if device == "cuda" else "GFLOP/s"
        print(f"| contender | fwd ms | fwd {unit} | fwd+bwd ms | fwd+bwd {unit} | peak MiB |")
        print("|---|---|---|---|---|---|")
        fwd_flops = case.forward_flops()
        results = measure_all(contenders(case, mask, device), q, k, v, device, repeats, backward)
        for name, res in results.items():
            note = f" ({res['error']})" if "error" in res else ""
            print(f"| {name}{note} | {fmt(res['fwd'])} | {rate(fwd_flops, res['fwd'], device)} | {fmt(res['fwdbwd'])} | "
                  f"{rate(3.5 * fwd_flops, res['fwdbwd'], device)} | {res['peak_mib']:.0f} |", flush=True)
        picks = [auto.auto_choices().get(auto.bucket_key(q, k, mask is not None, case.causal, 0.0, grad), "?")
                 for grad in (False, True)]
        summaries.append({"case": case, "sdpa_ran": ran, "results": results, "auto_pick": " / ".join(picks)})
    return summaries


def _ratio(other_ms: float, ours_ms: float) -> str:
    return "-" if other_ms == float("inf") else f"{other_ms / ours_ms:.2f}"


def print_gpu_summary(summaries: list[dict]) -> None:
    """Speedups = other's time / polyfuse-triton's time (>1 means polyfuse is faster).

    Goals: ``x fwd+bwd`` >= 1.2 on the padded multimodal rows; ``x FA2`` >= 0.7 on the ``fa2`` rows
    (equal FLOPs, so the time ratio is the TFLOP/s ratio; ``-`` where flash refuses the mask).
    """
    print("\n## Summary (speedup of polyfuse-triton; >1 = faster)\n")
    print("| case | SDPA ran | best SDPA fwd | x fwd | best SDPA fwd+bwd | x fwd+bwd | x flex fwd | x flex fwd+bwd "
          "| x FA2 (sdpa-flash) fwd+bwd |")
    print("|---|---|---|---|---|---|---|---|---|")
    for summary in summaries:
        res = summary["results"]
        ours = res["polyfuse-triton"]
        sdpa = {n: r for n, r in res.items() if n.startswith("sdpa-") and n != "sdpa-default"}
        best_fwd = min(sdpa, key=lambda n: sdpa[n]["fwd"])
        best_bwd = min(sdpa, key=lambda n: sdpa[n]["fwdbwd"])
        flex = res["flex"]
        print(f"| {summary['case'].name} | {summary['sdpa_ran']} | {best_fwd} | {sdpa[best_fwd]['fwd'] / ours['fwd']:.2f} | "
              f"{best_bwd} | {sdpa[best_bwd]['fwdbwd'] / ours['fwdbwd']:.2f} | {flex['fwd'] / ours['fwd']:.2f} | "
              f"{flex['fwdbwd'] / ours['fwdbwd']:.2f} | {_ratio(res['sdpa-flash']['fwdbwd'], ours['fwdbwd'])} |")


def print_cpu_summary(summaries: list[dict]) -> None:
    print("\n## CPU ratios (time / SDPA time; <1 = faster than SDPA)\n")
    names = ("reference", "sdpa-math", "polyfuse-auto")
    print("| case | " + " | ".join(f"{n} fwd | {n} fwd+bwd" for n in names) + " | auto picked (inference / training) |")
    print("|---" * (2 * len(names) + 2) + "|")
    for summary in summaries:
        res, case = summary["results"], summary["case"]
        sdpa = res["sdpa"]
        ratios = " | ".join(f"{res[n]['fwd'] / sdpa['fwd']:.2f} | {res[n]['fwdbwd'] / sdpa['fwdbwd']:.2f}" for n in names)
        print(f"| {case.name} | {ratios} | {summary['auto_pick']} |")


INTERPRETER_CASES = [  # (B, H, Lq, Lk, D, padded, causal, dtype)
    (2, 2, 37, 13, 64, True, False, "fp32"), (2, 2, 13, 37, 32, True, True, "fp32"),
    (2, 2, 33, 33, 128, False, True, "fp32"), (2, 2, 29, 21, 64, True, False, "fp16"),
    (2, 2, 29, 21, 64, True, True, "bf16"),
]


def interpreter_check() -> int:
    """Triton kernels (interpreted) vs the fp32 reference; returns the number of failing cases."""
    from polyfuse.attention.reference import reference_attention

    tolerance = {"fp32": 5e-5, "fp16": 1e-2, "bf16": 6e-2}
    failures = 0
    print("| case | dtype | max |out err| | max |grad err| | ok |\n|---|---|---|---|---|")
    for batch, heads, lq, lk, head_dim, padded, causal, dtype_name in INTERPRETER_CASES:
        case = Case("check", batch, heads, lq, lk, head_dim, causal, min_keys=1 if padded else 0)
        q, k, v, mask = make_inputs(case, DTYPES[dtype_name], "cpu")
        if mask is not None:
            mask[0] = False  # an absent modality
        leaves = [t.requires_grad_() for t in (q, k, v)]
        out = attention(*leaves, mask, causal=causal, backend="triton")
        grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
        exact = [t.detach().float().requires_grad_() for t in leaves]
        ref = reference_attention(AttentionArgs(*exact, mask, causal=causal))[0]
        ref_grads = torch.autograd.grad(ref, exact, torch.ones_like(ref))
        out_err = (out.float() - ref).abs().max().item()
        grad_err = max((g.float() - r).abs().max().item() for g, r in zip(grads, ref_grads))
        ok = out_err <= tolerance[dtype_name] and grad_err <= 2 * tolerance[dtype_name]
        failures += not ok
        print(f"| B{batch} H{heads} Lq{lq} Lk{lk} D{head_dim} {'padded' if padded else ''}{' causal' if causal else ''} "
              f"| {dtype_name} | {out_err:.1e} | {grad_err:.1e} | {'yes' if ok else 'NO'} |", flush=True)
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", choices=["multimodal", "fa2", "all"], default="all")
    parser.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    parser.add_argument("--batch", type=int, default=None, help="multimodal batch (default 32 on GPU, 4 on CPU)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--forward-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="first case of each kind only")
    parser.add_argument("--cpu-dtypes", default="fp32,bf16", help="CPU mode: dtypes to time")
    parser.add_argument("--with-flex", action="store_true", help="CPU mode: also time compiled flex (forward)")
    parser.add_argument("--interpreter-check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.interpreter_check:
        return 1 if interpreter_check() else 0
    if torch.cuda.is_available():
        batch = args.batch or 32
        cases = []
        if args.grid in ("multimodal", "all"):
            cases += multimodal_grid(batch, args.heads, args.head_dim)
        if args.grid in ("fa2", "all"):
            cases += fa2_grid()
        if args.quick:
            cases = [cases[0], cases[3], cases[-1]]
        print(f"# polyfuse attention benchmark on {torch.cuda.get_device_name()} (torch {torch.__version__}, "
              f"{args.dtype}; SDPA flash impl: {torch.nn.attention.current_flash_attention_impl() or 'built-in FA2'})")
        summaries = run_grid(cases, DTYPES[args.dtype], "cuda", args.repeats, not args.forward_only)
        print_gpu_summary(summaries)
        return 0

    print("The benchmark grid needs a CUDA GPU; none is visible. Running the Triton interpreter correctness "
          "check and CPU timings instead.\n\n## Triton kernels in the interpreter vs the fp32 reference\n", flush=True)
    env = dict(os.environ, TRITON_INTERPRET="1")
    check = subprocess.run([sys.executable, __file__, "--interpreter-check"], env=env)
    batch = args.batch or 4
    cases = multimodal_grid(batch, args.heads, args.head_dim)
    if args.quick:
        cases = [cases[0], cases[3], cases[-1]]
    for dtype_name in args.cpu_dtypes.split(","):
        print(f"\n## CPU ({torch.get_num_threads()} threads), {dtype_name}, batch {batch}")
        auto.clear_auto_cache()
        summaries = run_grid(cases, DTYPES[dtype_name], "cpu", args.repeats, not args.forward_only)
        if not args.forward_only:
            print_cpu_summary(summaries)
        if args.with_flex:
            print("\n| case | flex fwd / sdpa fwd |\n|---|---|")
            for summary in summaries:
                case = summary["case"]
                q, k, v, mask = make_inputs(case, DTYPES[dtype_name], "cpu")
                named = {"sdpa": contenders(case, mask, "cpu")["sdpa"],
                         "flex": lambda q, k, v: flex_padded_attention(AttentionArgs(q, k, v, mask, causal=case.causal))[0]}
                res = measure_all(named, q, k, v, "cpu", args.repeats, backward=False)
                print(f"| {case.name} | {res['flex']['fwd'] / res['sdpa']['fwd']:.2f} |", flush=True)
    return check.returncode


if __name__ == "__main__":
    sys.exit(main())

"""Time and memory of every registered fusion at a realistic size, measured side by side in one process.

Default size: ViT-S/16-like image tokens (197 x 384), 2 s of audio frames (100 x 384, ragged), a
32-token text (ragged), out_dim 384, batch 32, one modality absent for a quarter of the batch.

For each fusion it reports

* parameters,
* forward and forward + backward time (median over ``--repeats`` after ``--warmup``),
* activation memory: bytes of the tensors autograd saves for backward (device independent, the
  part of memory that grows with batch and sequence length), and on CUDA the peak allocated
  memory of a forward + backward pass,
* the ratio of forward + backward time to ``concat`` (measured in the same process).

Examples::

    python scripts/bench_fusion.py                         # CPU, default size
    python scripts/bench_fusion.py --device cuda --batch 128
    python scripts/bench_fusion.py --names early perceiver --width 768 --markdown
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from polyfuse import fusion
from polyfuse.attention import get_default_backend, set_default_backend
from polyfuse.batch import Encoded


def make_inputs(batch: int, width: int, lengths: dict[str, int], device: torch.device) -> dict[str, Encoded]:
    """Ragged padding (lengths between half and full) and ``audio`` absent for a quarter of the batch."""
    generator = torch.Generator().manual_seed(0)
    inputs = {}
    for name, length in lengths.items():
        real = torch.randint(max(1, length // 2), length + 1, (batch,), generator=generator)
        real[0] = length
        mask = torch.arange(length)[None] < real[:, None]
        present = torch.ones(batch, dtype=torch.bool)
        if name == "audio":
            present[: batch // 4] = False
        tokens = torch.randn(batch, length, width, generator=generator)
        inputs[name] = Encoded(tokens.to(device), mask.to(device), present.to(device))
    return inputs


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``step``."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def saved_bytes(module: fusion.Fusion, inputs: dict[str, Encoded]) -> int:
    """Bytes of the tensors autograd keeps for backward in one forward pass (unique storages)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(inputs).pooled.sum()
    parameters = {p.untyped_storage().data_ptr() for p in module.parameters()}
    return sum(size for pointer, size in seen.items() if pointer not in parameters)


def bench(name: str, args: argparse.Namespace, inputs: dict[str, Encoded], device: torch.device) -> dict:
    dims = {m: enc.dim for m, enc in inputs.items()}
    torch.manual_seed(0)
    module = fusion.build(name, dims=dims, out_dim=args.out_dim).to(device).train()

    def forward() -> None:
        with torch.no_grad():
            module(inputs)

    def forward_backward() -> None:
        out = module(inputs)
        loss = out.pooled.square().mean() + (out.tokens.square().mean() if out.tokens is not None else 0.0)
        loss.backward()
        module.zero_grad(set_to_none=True)

    result = {
        "name": name,
        "params": sum(p.numel() for p in module.parameters()),
        "forward": timed(forward, device, args.warmup, args.repeats),
        "train": timed(forward_backward, device, args.warmup, args.repeats),
        "saved": saved_bytes(module, inputs),
        "peak": None,
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        forward_backward()
        result["peak"] = torch.cuda.max_memory_allocated(device) - base
    return result


def report(rows: list[dict], markdown: bool) -> str:
    baseline = next((r["train"] for r in rows if r["name"] == "concat"), rows[0]["train"])
    header = ["fusion", "params", "fwd ms", "fwd+bwd ms", "x concat", "saved act. MiB", "peak MiB"]
    lines = []
    for r in rows:
        lines.append([r["name"], f"{r['params']:,}", f"{1e3 * r['forward']:.1f}", f"{1e3 * r['train']:.1f}",
                      f"{r['train'] / baseline:.1f}", f"{r['saved'] / 2**20:.1f}",
                      "–" if r["peak"] is None else f"{r['peak'] / 2**20:.1f}"])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    fmt = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(header)] + [fmt(line) for line in lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="*", default=None, help="fusions to time (default: all registered)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=384, help="token width of every modality")
    parser.add_argument("--out-dim", type=int, default=384)
    parser.add_argument("--lengths", default="image=197,audio=100,text=32", help="max tokens per modality")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    parser.add_argument("--attention-backend", default=None, help="polyfuse attention backend (default: library's)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.attention_backend:
        set_default_backend(args.attention_backend)
    device = torch.device(args.device)
    lengths = {k: int(v) for k, v in (item.split("=") for item in args.lengths.split(","))}
    names = args.names or fusion.available()
    inputs = make_inputs(args.batch, args.width, lengths, device)
    print(f"device={device} batch={args.batch} width={args.width} out_dim={args.out_dim} lengths={lengths} "
          f"threads={torch.get_num_threads()} attention={get_default_backend()} (audio absent for 1/4 of the batch)", flush=True)
    rows = []
    for name in names:
        rows.append(bench(name, args, inputs, device))
        print(f"  {name}: {1e3 * rows[-1]['train']:.1f} ms fwd+bwd", flush=True)
    print(report(rows, args.markdown))


if __name__ == "__main__":
    main()

"""One training step (forward + backward + optimiser) of polyfuse baselines vs the model they reproduce.

Both sides are built from one randomly initialised reference checkpoint (loaded into polyfuse), get
the same batch and the same optimiser, and are timed side by side in this process
(:func:`benchtools.interleaved_medians`); the printed ratio is polyfuse / reference (goal <= 1.0x on
CPU; on a GPU with the Triton attention backend, faster).

    .venv/bin/python scripts/bench_train.py                       # every pair, CPU, small sizes
    .venv/bin/python scripts/bench_train.py --model clip --size base --device cuda

Pairs are registered in ``PAIRS`` by the modules ``bench_train_<model>.py`` beside this script:
each exposes ``pairs(size: str, device: str, tmp: Path) -> dict[str, tuple[Step, Step]]`` returning
(reference step, polyfuse step) closures that run one full optimiser step.

Gradient caching (``--grad-cache``): polyfuse CLIP (the ``small`` preset's architecture) at global
batch ``--batch`` (256), one plain step vs one grad-cache step with ``--chunk`` (32) rows per chunk
(:mod:`polyfuse.training.grad_cache`). Step times are interleaved medians in this process; peak
memory is measured in a fresh subprocess per case: the resident set size (psutil, sampled every
millisecond) during one step, above the RSS before it (after a warm-up step has allocated the
optimiser state and ``malloc_trim`` has returned freed memory). Prints both and their ratios.

    .venv/bin/python scripts/bench_train.py --grad-cache --threads 1
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from benchtools import interleaved_medians

Step = Callable[[], None]
PAIRS = {"clip": "bench_train_clip", "vilt": "bench_train_vilt"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=[*PAIRS, "all"], default="all")
    parser.add_argument("--size", default="small", help="size preset understood by each bench_train_<model> module")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--grad-cache", action="store_true", help="plain vs gradient-cached CLIP step")
    parser.add_argument("--batch", type=int, default=256, help="--grad-cache: global batch")
    parser.add_argument("--chunk", type=int, default=32, help="--grad-cache: rows per chunk")
    parser.add_argument("--memory-case", choices=["plain", "grad_cache"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_case:
        print(json.dumps({"peak_rss_mb": step_peak_rss_mb(*clip_steps(args)[args.memory_case])}))
        return
    if args.grad_cache:
        grad_cache_comparison(args)
        return
    print(f"device={args.device} size={args.size} repeats={args.repeats} torch={torch.__version__}")
    print(f"| pair | reference ms | polyfuse ms | polyfuse / reference |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in PAIRS if args.model == "all" else [args.model]:
            module = importlib.import_module(PAIRS[model])
            for name, (reference, ours) in module.pairs(args.size, args.device, Path(tmp)).items():
                medians = interleaved_medians({"reference": reference, "polyfuse": ours}, args.repeats, args.warmup,
                                              args.device)
                ratio = medians["polyfuse"] / medians["reference"]
                print(f"| {name} | {medians['reference'] * 1e3:.1f} | {medians['polyfuse'] * 1e3:.1f} | {ratio:.2f}x |",
                      flush=True)


def clip_steps(args: argparse.Namespace) -> dict[str, tuple[Callable[[], None], torch.nn.Module]]:
    """``{"plain": (step, model), "grad_cache": (step, model)}``: two copies of one CLIP, one batch, AdamW."""
    import open_clip
    from bench_train_clip import MODEL, SIZES, _batch

    from polyfuse.losses import ContrastiveLoss
    from polyfuse.models import CLIP
    from polyfuse.training.grad_cache import grad_cache_step

    config = open_clip.get_model_config(MODEL)
    config.update(SIZES["small"]["overrides"](config))
    torch.manual_seed(0)
    models = {"plain": CLIP.from_config(config).train().to(args.device)}
    models["grad_cache"] = CLIP.from_config(config).train().to(args.device)
    models["grad_cache"].load_state_dict(models["plain"].state_dict())
    images, ids = _batch(args.batch, config["vision_cfg"]["image_size"], config["text_cfg"]["context_length"],
                         config["text_cfg"]["vocab_size"], args.device)
    loss_fn = ContrastiveLoss()
    steps = {}
    for name, model in models.items():
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)

        def step(model=model, optimizer=optimizer, cached=name == "grad_cache") -> None:
            optimizer.zero_grad(set_to_none=True)
            if cached:
                chunks = list(zip(images.split(args.chunk), ids.split(args.chunk)))
                grad_cache_step(lambda chunk: model(*chunk), chunks, lambda out: loss_fn(*out),
                                rows=lambda chunk: chunk[0].shape[0])
            else:
                loss_fn(*model(images, ids)).backward()
            optimizer.step()

        steps[name] = (step, model)
    return steps


def step_peak_rss_mb(step: Callable[[], None], model: torch.nn.Module) -> float:
    """MB of resident memory one step adds at its peak (see the module docstring)."""
    import psutil

    process = psutil.Process()
    step()  # warm-up: optimiser state, allocator pools
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    baseline, peak, done = process.memory_info().rss, [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    step()
    done.set()
    sampler.join()
    return (max(peak[0], process.memory_info().rss) - baseline) / 2 ** 20


def grad_cache_comparison(args: argparse.Namespace) -> None:
    """Plain vs grad-cache CLIP step: interleaved median times here, peak memory in one subprocess per case."""
    print(f"clip small, global batch {args.batch}, chunk {args.chunk}, device={args.device}, "
          f"threads={torch.get_num_threads()}, repeats={args.repeats}, torch={torch.__version__}")
    memory = {}
    for case in ("plain", "grad_cache"):
        command = [sys.executable, __file__, "--memory-case", case, "--batch", str(args.batch), "--chunk",
                   str(args.chunk), "--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        memory[case] = json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    steps = clip_steps(args)
    medians = interleaved_medians({name: step for name, (step, _) in steps.items()}, args.repeats, args.warmup,
                                  args.device)
    print("| case | step s | peak RSS above baseline (MB) |\n|---|---|---|")
    for case in ("plain", "grad_cache"):
        label = "plain" if case == "plain" else f"grad cache, chunk {args.chunk}"
        print(f"| {label} | {medians[case]:.2f} | {memory[case]:.0f} |")
    print(f"grad cache / plain: time {medians['grad_cache'] / medians['plain']:.2f}x, "
          f"peak memory {memory['grad_cache'] / max(memory['plain'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()

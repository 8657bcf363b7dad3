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
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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


if __name__ == "__main__":
    main()

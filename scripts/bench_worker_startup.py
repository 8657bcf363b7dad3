"""What spawned DataLoader workers cost a short ``polyfuse-train`` run: the light entry module against a
main module that imports Lightning, side by side, interleaved.

DataLoader workers start with ``spawn`` (docs/data.md): each is a fresh interpreter that re-imports the
program's main module and whatever unpickling the dataset and the ``worker_init_fn`` needs. Two ways of
launching the same tiny run (AV-digits, ``data.num_workers=2``: a train, a validation and a test loader,
two workers each) are timed in turn:

* ``light``: ``python -m polyfuse.cli.train`` -- the entry module imports Hydra and OmegaConf only,
  Lightning loads in the main process (``polyfuse.cli.experiment``), and the loaders' ``SeedWorker``
  seeds worker RNGs without Lightning's ``pl_worker_init_function``;
* ``heavy``: the same ``main`` from a launcher script that imports Lightning first, as the entry module
  did before: every worker re-runs it and imports Lightning.

Reported: median wall seconds and CPU seconds (the run and its reaped workers) per variant, and the
ratios heavy / light.

    python scripts/bench_worker_startup.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OVERRIDES = ["data.num_workers=2", "data.batch_size=32", "trainer.max_epochs=2", "+trainer.limit_train_batches=4",
             "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2", "logger=csv", "callbacks.progress_bar=null",
             "trainer.enable_model_summary=false", "seed=0"]
HEAVY_MAIN = ("import lightning  # the old entry module's imports\nfrom polyfuse.cli.train import main\n\n"
              "if __name__ == '__main__':\n    main()\n")


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the process and the children it reaped) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                                     os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as tmp:
        launcher = Path(tmp) / "heavy_main.py"
        launcher.write_text(HEAVY_MAIN)
        heads = {"light": [sys.executable, "-m", "polyfuse.cli.train"], "heavy": [sys.executable, str(launcher)]}
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in heads}
        for repeat in range(args.repeats):
            order = list(heads) if repeat % 2 == 0 else list(reversed(heads))
            for name in order:
                run_dir = Path(tmp) / f"{name}{repeat}"
                results[name].append(timed([*heads[name], f"hydra.run.dir={run_dir}", *OVERRIDES], env))
                print(f"  {name} #{repeat}: wall {results[name][-1][0]:.1f} s, cpu {results[name][-1][1]:.1f} s",
                      flush=True)
    wall = {name: statistics.median(w for w, _ in runs) for name, runs in results.items()}
    cpu = {name: statistics.median(c for _, c in runs) for name, runs in results.items()}
    print("| launch | wall s | CPU s |\n|---|---:|---:|")
    for name in heads:
        print(f"| {name} | {wall[name]:.1f} | {cpu[name]:.1f} |")
    print(f"| heavy / light | {wall['heavy'] / wall['light']:.2f}x | {cpu['heavy'] / cpu['light']:.2f}x |")


if __name__ == "__main__":
    main()

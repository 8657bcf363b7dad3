"""What spawned DataLoader workers cost a short ``polyfuse-train`` or ``polyfuse-eval`` run: the light entry
module against a main module that imports what the entry module used to, side by side, interleaved.

DataLoader workers start with ``spawn`` (docs/data.md): each is a fresh interpreter that re-imports the
program's main module and whatever unpickling the dataset and the ``worker_init_fn`` needs. Two ways of
launching the same tiny run (AV-digits, ``data.num_workers=2``: a train, a validation and a test loader,
two workers each) are timed in turn:

* ``light``: ``python -m polyfuse.cli.train`` -- the entry module imports Hydra and OmegaConf only,
  Lightning loads in the main process (``polyfuse.cli.experiment``), and the loaders' ``SeedWorker``
  seeds worker RNGs without Lightning's ``pl_worker_init_function``;
* ``heavy``: the same ``main`` from a launcher script that imports Lightning first, as the entry module
  did before: every worker re-runs it and imports Lightning.

``--tool eval`` trains that run once, then times ``python -m polyfuse.cli.eval`` on it (the test split's
loader, two workers, clean evaluation and a short robustness grid) against a launcher that first imports
Lightning and the model zoo, as ``polyfuse.cli.eval`` did through ``polyfuse.training`` and
``polyfuse.robustness`` before they loaded those lazily.

Reported: median wall seconds and CPU seconds (the run and its reaped workers) per variant, and the
ratios heavy / light.

    python scripts/bench_worker_startup.py --repeats 3
    python scripts/bench_worker_startup.py --tool eval --repeats 3
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
#: per tool: its module, its overrides, and what the entry module imported before it was made light
TOOLS = {"train": ("polyfuse.cli.train", OVERRIDES, "import lightning"),
         "eval": ("polyfuse.cli.eval", ["split=test", "max_batches=2", "robustness.subsets=single",
                                        "robustness.rates=[0,1]", "robustness.severities=[0,1]"],
                  "import lightning, polyfuse.models, polyfuse.training.module")}


def heavy_main(tool: str) -> str:
    """A launcher that runs ``tool``'s ``main`` after the imports its entry module used to make."""
    module, _, imports = TOOLS[tool]
    return (f"{imports}  # the old entry module's imports\nfrom {module} import main\n\n"
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
    parser.add_argument("--tool", choices=sorted(TOOLS), default="train", help="the entry point to time")
    args = parser.parse_args()
    module, overrides, _ = TOOLS[args.tool]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                                     os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as tmp:
        launcher = Path(tmp) / "heavy_main.py"
        launcher.write_text(heavy_main(args.tool))
        heads = {"light": [sys.executable, "-m", module], "heavy": [sys.executable, str(launcher)]}
        trained = Path(tmp) / "trained"
        if args.tool == "eval":  # the run both variants evaluate (its config keeps data.num_workers=2)
            timed([sys.executable, "-m", "polyfuse.cli.train", f"hydra.run.dir={trained}", *OVERRIDES], env)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in heads}
        for repeat in range(args.repeats):
            order = list(heads) if repeat % 2 == 0 else list(reversed(heads))
            for name in order:
                run_dir = Path(tmp) / f"{name}{repeat}"
                target = f"hydra.run.dir={run_dir}" if args.tool == "train" else f"run_dir={trained}"
                results[name].append(timed([*heads[name], target, *overrides], env))
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

"""Tutorial: measure the robustness of your fusion to missing and noisy modalities.

Two fusions are trained on the embedded AV-digits dataset (image + spoken digit + text hint) with
the ``polyfuse-train`` CLI, then each checkpoint is evaluated with the Python API of
``polyfuse.robustness``: every single modality dropped for a growing fraction of the test samples,
and every corruption defined for the three modalities at growing severity. Each curve is summarised
by its clean accuracy, its accuracy at the highest level and its relative robustness (the area
under the curve, MultiBench), and the script prints one table per fusion pair.

Run it from the repository root::

    python docs/tutorials/robustness_of_your_fusion.py                       # concat vs late, 10 epochs
    python docs/tutorials/robustness_of_your_fusion.py --fusions concat cross_attention --epochs 5
    python docs/tutorials/robustness_of_your_fusion.py --tiny --out /tmp/smoke  # a 2-step smoke run

A second call with the same ``--out`` reuses the trained runs and only re-evaluates them.

Swap ``concat`` for the name of your own registered fusion (guides/add_fusion.md) to compare it with
the ones that ship. ``polyfuse-eval run_dir=<dir>`` computes the same numbers from the command line
and ``polyfuse-report`` tabulates them over seeds (docs/robustness.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from polyfuse.cli.eval import evaluation_batches
from polyfuse.reporting.runs import find_runs, load_model
from polyfuse.robustness import RobustnessConfig, evaluate_clean, evaluate_robustness, summarise

#: a 2-step training and one test batch: checks that the pipeline runs, measures nothing
TINY = ["trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
        "test=false", "data.batch_size=32", "trainer.num_sanity_val_steps=0",
        "attention_backend=sdpa"]  # skip timing every attention backend (`auto`) for 2 steps


def train(fusions: list[str], out: Path, epochs: int, seed: int, tiny: bool) -> dict[str, Path]:
    """Train one AV-digits model per fusion (one Hydra multirun); returns fusion -> run directory."""
    if not any(out.glob("*/summary.json")):
        overrides = ["-m", f"model/fusion={','.join(fusions)}", f"seed={seed}", f"trainer.max_epochs={epochs}",
                     f"hydra.sweep.dir={out}", "callbacks.progress_bar=null", *(TINY if tiny else [])]
        print("polyfuse-train", " ".join(overrides), flush=True)
        subprocess.run([sys.executable, "-m", "polyfuse.cli.train", *overrides], check=True,
                       stdout=subprocess.DEVNULL if tiny else None)
    runs = {run.fusion: run.path for run in find_runs(out)}  # reads each run's config-group choices
    missing = [fusion for fusion in fusions if fusion not in runs]
    if missing:
        raise SystemExit(f"{out} holds no run of {missing}; remove it or pass another --out")
    return runs


def robustness(run_dir: Path, config: RobustnessConfig, batch_size: int, max_batches: int | None) -> pd.DataFrame:
    """Per-perturbation summary (clean, worst, relative robustness) of one run, on the test split."""
    module, run_cfg = load_model(run_dir, "best")
    batches, pad_values = evaluation_batches(run_cfg, "test", batch_size=batch_size, max_batches=max_batches)
    print(f"{run_cfg.model.fusion._target_.split('.')[-1]}: clean test accuracy {evaluate_clean(module.model, batches)['acc']:.1%}")
    records = pd.DataFrame(evaluate_robustness(module.model, batches, config, pad_values=pad_values))
    return summarise(records, "acc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fusions", nargs="+", default=["concat", "late"], help="registered fusion names")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outputs/tutorial_robustness"))
    parser.add_argument("--tiny", action="store_true", help="2 training steps, 32 test samples, levels 0 and 1")
    args = parser.parse_args()

    levels = [0.0, 1.0] if args.tiny else [0.0, 0.25, 0.5, 0.75, 1.0]
    # missing: each single modality dropped for a fraction `level` of the samples;
    # corruptions: every one defined for image, audio and text (corruptions=None)
    config = RobustnessConfig(rates=levels, subsets="single", severities=levels, corruptions=None)
    runs = train(args.fusions, args.out, args.epochs, args.seed, args.tiny)
    summaries = [robustness(runs[fusion], config, batch_size=32 if args.tiny else 256,
                            max_batches=1 if args.tiny else None).assign(fusion=fusion) for fusion in args.fusions]

    table = pd.concat(summaries).pivot(index="perturbation", columns="fusion",
                                       values=["clean", "worst", "relative_robustness"])
    pd.set_option("display.width", 160)
    print("\nAV-digits test accuracy under perturbation (clean = level 0, worst = level 1,")
    print("relative robustness = area under the accuracy-vs-level curve)\n")
    print(table.round(3).to_string())
    table.to_csv(args.out / "robustness_table.csv")
    print(f"\nwritten: {args.out / 'robustness_table.csv'}")


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    main()

"""The interaction-task fusion table: every fusion and the unimodal baselines on the four AV-digits
tasks (``redundant``, ``unique``, ``synergy``, ``mixed``) over seeds, written into docs/fusions.md.

Budgets (``--budget``):

* ``frozen`` (default): the image and the audio encoder are each trained ONCE on the redundant digit
  task, alone (``experiment=fusion_tasks_pretrain``, into ``--pretrain-dir/<modality>``; trained
  first when missing), then every table run loads both frozen (``experiment=fusion_tasks``) and
  trains only the fusion and the head. The tasks become learnable in seconds per run; what a fusion
  must learn is how to combine two digit codes.
* ``scratch``: every run trains ``vit_tiny`` + ``audio_cnn`` from scratch (``data.test_splits=[test]``
  plus ``--overrides``, e.g. ``trainer.max_epochs=25``); on 2 CPU cores an epoch costs ~3-10 s per
  run, so a learnable budget for the whole table takes many hours.

One Hydra multirun per variant and group of missing runs, into ``--out/<variant>/<task>_seed<seed>``.
Resumable: a (variant, task, seed) whose directory has ``summary.json`` is skipped; one without it (a
run that was killed) is removed and rerun. Without ``--train`` only the table is rebuilt from what
finished. ``--predictions`` also evaluates each finished run's best checkpoint once and leaves its
per-sample ``predictions_test.csv`` (for ``polyfuse-report``'s paired bootstrap over test samples). The
table goes between ``<!-- fusion-table:tasks:start/end -->``: mean ± 95% CI (Student t
over seeds), the difference to ``late`` and the synergy task's validation curves. Variants train in the
order baselines, ``late``, ``concat``, ``tensor``, then the other fusions. Example::

    OMP_NUM_THREADS=1 nice -n 19 python scripts/fusion_tasks.py --train --out /work/fusion_tasks_runs
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from polyfuse import fusion
from polyfuse.cli.config import repo_root
from polyfuse.data.avdigits_tasks import INTERACTION_TASKS
from polyfuse.reporting import find_runs
from polyfuse.reporting.predictions import predictions_path, write_predictions
from polyfuse.reporting.task_table import curve_table, difference_table, interval_table

ROOT = repo_root()
# unimodal baselines of the interaction table: variant -> overrides (concat over one modality)
BASELINES = {"image only": ["model/fusion=concat", "data.modalities=[image]"],
             "audio only": ["model/fusion=concat", "data.modalities=[audio]"]}
FIRST = ["late", "concat", "tensor"]  # trained right after the baselines: the contrast the table is for
BUDGETS = ("frozen", "scratch")
# what the label allows: chance (majority class) and the best accuracy from one modality (Bayes)
TASK_LIMITS = {"chance": {"redundant": 0.1, "unique": 0.05, "synergy": 0.1, "mixed": 0.0625},
               "best from the image alone": {"redundant": 1.0, "unique": 0.5, "synergy": 0.1, "mixed": 0.25},
               "best from the audio alone": {"redundant": 1.0, "unique": 0.1, "synergy": 0.1, "mixed": 0.25}}
PRETRAIN_MODALITIES = ("image", "audio")


def variant_dir(variant: str) -> str:
    return variant.replace(" ", "_")


def run_dir(out: Path, variant: str, task: str, seed: int) -> Path:
    """Where the run of ``variant`` on ``task`` with ``seed`` writes (``hydra.sweep.subdir`` below)."""
    return out / variant_dir(variant) / f"{task}_seed{seed}"


def ordered_variants(names: list[str], baselines: bool = True) -> list[str]:
    """Baselines, then :data:`FIRST` among ``names``, then the other ``names`` in their order."""
    fusions = [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]
    return [*(BASELINES if baselines else []), *fusions]


def missing_runs(out: Path, variant: str, tasks: list[str], seeds: list[int]) -> dict[str, list[int]]:
    """``task -> seeds`` of ``variant`` with no ``summary.json`` yet (tasks with none missing left out)."""
    missing = {task: [s for s in seeds if not (run_dir(out, variant, task, s) / "summary.json").is_file()]
               for task in tasks}
    return {task: found for task, found in missing.items() if found}


def multirun_groups(missing: dict[str, list[int]]) -> list[tuple[list[str], list[int]]]:
    """Group the tasks that miss the same seeds: each group is one ``tasks x seeds`` multirun."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for task, seeds in missing.items():
        groups.setdefault(tuple(seeds), []).append(task)
    return [(tasks, list(seeds)) for seeds, tasks in groups.items()]


def budget_overrides(budget: str, pretrain_dir: Path) -> list[str]:
    """The Hydra overrides every table run of ``budget`` gets (before ``--overrides``)."""
    if budget == "frozen":
        return ["experiment=fusion_tasks", f"pretrain_dir={pretrain_dir.resolve()}"]
    if budget == "scratch":
        return ["data.test_splits=[test]"]
    raise ValueError(f"unknown budget {budget!r}; valid: {', '.join(BUDGETS)}")


def multirun_command(variant: str, tasks: list[str], seeds: list[int], out: Path, overrides: list[str]) -> list[str]:
    """``polyfuse-train -m`` of ``variant`` over ``seeds x tasks`` (seed outermost), one dir per run."""
    fixed = BASELINES.get(variant, [f"model/fusion={variant}"])
    return [sys.executable, "-m", "polyfuse.cli.train", "-m", *overrides, f"seed={','.join(map(str, seeds))}",
            f"data={','.join(f'avdigits_{t}' for t in tasks)}", *fixed,
            f"task_name=fusion_tasks_{variant_dir(variant)}", f"hydra.sweep.dir={(out / variant_dir(variant)).resolve()}",
            "hydra.sweep.subdir=${data.task}_seed${seed}"]


def pretrain_commands(pretrain_dir: Path, overrides: list[str]) -> list[tuple[str, list[str]]]:
    """``(modality, polyfuse-train command)`` for each pretrained encoder that has no ``summary.json`` yet."""
    return [(m, [sys.executable, "-m", "polyfuse.cli.train", "experiment=fusion_tasks_pretrain", f"data.modalities=[{m}]",
                 f"hydra.run.dir={(pretrain_dir / m).resolve()}", *overrides])
            for m in PRETRAIN_MODALITIES if not (pretrain_dir / m / "summary.json").is_file()]


def call(command: list[str], log: Path, threads: int | None) -> int:
    """Run ``command`` from the checkout, appending its output to ``log``; its exit code."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(log, "a") as stream:
        stream.write(f"$ {' '.join(command)}\n")
        stream.flush()
        code = subprocess.call(command, stdout=stream, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    print(f"{log.stem}: exit {code} after {time.time() - started:.0f} s", flush=True)
    return code


def train_variant(variant: str, tasks: list[str], seeds: list[int], out: Path, overrides: list[str],
                  threads: int | None) -> int:
    """Train the missing runs of ``variant`` (a killed run's directory is removed first); worst exit code."""
    codes = [0]
    for group_tasks, group_seeds in multirun_groups(missing_runs(out, variant, tasks, seeds)):
        for task in group_tasks:
            for seed in group_seeds:
                shutil.rmtree(run_dir(out, variant, task, seed), ignore_errors=True)
        command = multirun_command(variant, group_tasks, group_seeds, out, overrides)
        codes.append(call(command, out / f"{variant_dir(variant)}.log", threads))
    return max(codes, key=abs)


def write_run_predictions(run: Path, split: str = "test") -> Path:
    """Evaluate ``run``'s best checkpoint on ``split`` in order and write ``predictions_<split>.csv`` (kept if present)."""
    path = predictions_path(run, split)
    if path.is_file():
        return path
    from polyfuse.cli.eval import evaluation_loader
    from polyfuse.cli.interactions import predicted_classes
    from polyfuse.reporting.runs import load_model

    module, cfg = load_model(run)
    ids, predicted, labels, _ = predicted_classes(module.model.eval(), evaluation_loader(cfg, split, None))
    return write_predictions(run, ids, labels, predicted, split)


def task_records(out: Path) -> pd.DataFrame:
    """One row per finished table run under ``out``: variant, task, seed, test acc, epochs, fit time, val curve.

    The pretrained encoders' runs (``out/pretrain``) are not table runs and are left out.
    """
    rows = []
    runs = find_runs(out) if any(out.rglob("summary.json")) else []
    for run in runs:
        if "pretrain" in run.path.relative_to(out).parts or run.config.get("task_name") == "fusion_tasks_pretrain":
            continue
        task = run.choices.get("data", "").removeprefix("avdigits_")
        modalities = list((run.config.get("data") or {}).get("modalities") or [])
        variant = f"{modalities[0]} only" if len(modalities) == 1 else run.fusion
        history = run.history()
        curve = history.dropna(subset=["val/acc"])["val/acc"].tolist() if "val/acc" in history else []
        rows.append({"variant": variant, "task": task, "seed": run.seed, "acc": (run.summary.get("test") or {}).get("test/acc"),
                     "epochs": run.summary.get("epochs"), "fit": run.summary.get("fit_seconds"), "curve": curve})
    return pd.DataFrame(rows, columns=["variant", "task", "seed", "acc", "epochs", "fit", "curve"])


def task_table(records: pd.DataFrame, tasks: list[str], variants: list[str], command: str, total: int,
               pending: Sequence[str] = ()) -> str:
    """Markdown: the accuracy table with CIs and limits, the difference to ``late``, the synergy curves;
    ``pending``: variants without any finished run yet (named under the table)."""
    lines = interval_table(records, tasks, variants, TASK_LIMITS)
    if len(records):
        epochs = sorted({int(e) for e in records["epochs"].dropna()})
        seconds = records["fit"].dropna()
        lines += ["", f"Test accuracy in %, mean ± half-width of the 95% CI (Student t over seeds), the number of seeds "
                  f"in parentheses (one seed: no interval). {len(records)} of {total} runs finished, epochs {epochs}, "
                  f"fit time per run {seconds.median():.0f} s median, {seconds.sum() / 60:.0f} min in all. "
                  f"Regenerate: `{command}`."]
    else:
        lines += ["", f"No run finished yet (0 of {total}). Regenerate: `{command}`."]
    if pending and len(records):
        lines += ["", f"No finished run yet: {', '.join(f'`{v}`' for v in pending)}."]
    differences = difference_table(records, tasks, variants, "late")
    if differences:
        lines += ["", "Difference to `late` in points, with its 95% CI (paired t over seeds where both ran the same "
                  "seeds, else Welch); *n.s.*: the interval contains 0, the pair is not distinguishable:", "", *differences]
    curves = curve_table(records, "synergy", variants, every=2)
    if curves:
        lines += ["", "Synergy task, validation accuracy (%) after epoch, mean over seeds:", "", *curves]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The interaction table's options (also reached as ``scripts/fusion_table.py --tasks``)."""
    parser.add_argument("--budget", choices=BUDGETS, default="frozen", help="frozen pretrained encoders or from scratch")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "fusion_tasks", help="where the runs go")
    parser.add_argument("--pretrain-dir", type=Path, default=None, help="frozen budget: the pretrained encoders' "
                        "runs (<dir>/image, <dir>/audio; default <out>/pretrain, trained when missing)")
    parser.add_argument("--pretrain-overrides", nargs="*", default=[], help="extra overrides of the pretraining runs")
    parser.add_argument("--task-names", nargs="*", default=None, help="interaction tasks (default: all four)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2], help="seeds of every variant x task")
    parser.add_argument("--no-baselines", action="store_true", help="skip the unimodal runs")
    parser.add_argument("--predictions", action="store_true", help="write each finished run's predictions_test.csv")


def command_line(args: argparse.Namespace, names: list[str]) -> str:
    """The command that regenerates the table (shown under it)."""
    parts = ["OMP_NUM_THREADS=1 nice -n 19 python scripts/fusion_tasks.py --train", f"--budget {args.budget}",
             f"--out {args.out}"]
    if args.pretrain_dir is not None:
        parts.append(f"--pretrain-dir {args.pretrain_dir}")
    if args.no_baselines:
        parts.append("--no-baselines")
    if args.task_names:
        parts.append(f"--task-names {' '.join(args.task_names)}")
    if sorted(names) != sorted(default_names()):
        parts.append(f"--names {' '.join(names)}")
    if args.seeds != [0, 1, 2]:
        parts.append(f"--seeds {' '.join(map(str, args.seeds))}")
    if args.overrides:
        parts.append(f"--overrides {' '.join(args.overrides)}")
    return " ".join(parts)


def default_names() -> list[str]:
    """Every registered fusion that feeds a classifier (the connectors into a language model do not)."""
    return [n for n in fusion.available() if not n.endswith("_connector")]


def tasks_main(args: argparse.Namespace, names: list[str]) -> str:
    """Train what is missing (with ``--train``), then write the table into ``args.docs``; the table text."""
    tasks = list(args.task_names or INTERACTION_TASKS)
    variants = ordered_variants(names, baselines=not args.no_baselines)
    pretrain_dir = args.pretrain_dir or args.out / "pretrain"
    overrides = [*budget_overrides(args.budget, pretrain_dir), *args.overrides]
    if args.train:
        if args.budget == "frozen":
            for modality, command in pretrain_commands(pretrain_dir, args.pretrain_overrides):
                if call(command, pretrain_dir / f"{modality}.log", args.threads):
                    raise SystemExit(f"pretraining the {modality} encoder failed: see {pretrain_dir / f'{modality}.log'}")
        for variant in variants:
            train_variant(variant, tasks, args.seeds, args.out, overrides, args.threads)
    if args.predictions:
        for variant in variants:
            for task in tasks:
                for seed in args.seeds:
                    if (run_dir(args.out, variant, task, seed) / "summary.json").is_file():
                        write_run_predictions(run_dir(args.out, variant, task, seed))
    records = task_records(args.out)
    shown = [v for v in variants if v in set(records["variant"])] or variants
    total = len(variants) * len(tasks) * len(args.seeds)
    pending = [v for v in variants if v not in shown]
    text = task_table(records, tasks, shown, command_line(args, names), total=total, pending=pending)
    from fusion_table import write  # the marker-splicing writer shared with the default table

    write(args.docs, text, "tasks")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="train the missing runs before building the table")
    parser.add_argument("--names", nargs="*", default=None, help="fusions (default: every classifier fusion)")
    parser.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides for every table run")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs (shared CPUs)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "fusions.md")
    add_arguments(parser)
    args = parser.parse_args()
    names = args.names or default_names()
    unknown = sorted(set(names) - set(fusion.available()))
    if unknown:
        raise SystemExit(f"unknown fusions {unknown}; available: {', '.join(fusion.available())}")
    print(tasks_main(args, names))


if __name__ == "__main__":
    main()

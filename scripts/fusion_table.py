"""Train every registered fusion on AV-digits through the CLI and write the accuracy table into docs/fusions.md.

Each fusion is trained by the ordinary command line, one run after the other::

    polyfuse-train model/fusion=<name> task_name=fusion_<name> [extra overrides]

and the table is built from the newest ``outputs/fusion_<name>/runs/*/summary.json``. Each run's best
checkpoint is also evaluated on the ``test`` split with modalities made absent at test time
(``present=False`` on the encoders' outputs; the models were trained with all modalities and no
modality dropout), cached in the run directory as ``robustness.json``. The table in
``docs/fusions.md`` lives between the ``<!-- fusion-table:start -->`` / ``<!-- fusion-table:end -->``
markers and is never typed by hand.

With ``--tasks`` it builds the *interaction* table instead (docs/fusions.md, "Interaction tasks"):
every fusion and the unimodal baselines (``concat`` on the image or the audio alone) on the
AV-digits tasks ``redundant``, ``unique``, ``synergy``, ``mixed`` (``data=avdigits_<task>``,
image + audio) over ``--seeds``, test accuracy mean ± 95% CI (Student t over seeds). One Hydra
multirun per variant (tasks x seeds, one process at a time) into ``--out/<variant>``; the table
is written between ``<!-- fusion-task-table:start/end -->`` with the synergy task's learning curves.

Examples::

    python scripts/fusion_table.py --train                   # train all fusions, then write the table
    python scripts/fusion_table.py --train --names gmu film  # (re)train some
    python scripts/fusion_table.py                           # only rebuild the table from existing runs
    python scripts/fusion_table.py --tasks --train --names late concat --seeds 0 1 2 \\
        --overrides trainer.max_epochs=3                     # the interaction table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any, Callable

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from polyfuse import fusion
from polyfuse.batch import Encoded
from polyfuse.cli.config import repo_root
from polyfuse.data.avdigits_tasks import INTERACTION_TASKS
from polyfuse.reporting import find_runs
from polyfuse.reporting.statistics import format_interval, pairwise_differences, t_interval

ROOT = repo_root()
# test-time missing modalities: column -> per-modality absence probability (data.missing)
CONDITIONS = {
    "no audio": {"audio": 1.0},
    "no text": {"text": 1.0},
    "no image": {"image": 1.0},
    "each 50% absent": {"image": 0.5, "audio": 0.5, "text": 0.5},
}


def task_name(name: str, tag: str) -> str:
    """``fusion_<name>``, or ``fusion_<name>_<tag>`` for a variant (e.g. trained with modality dropout)."""
    return f"fusion_{name}_{tag}" if tag else f"fusion_{name}"


def markers(tag: str) -> tuple[str, str]:
    """The comments in docs/fusions.md between which the table of variant ``tag`` is written."""
    label = f"fusion-table:{tag}" if tag else "fusion-table"
    return f"<!-- {label}:start -->", f"<!-- {label}:end -->"


def train(name: str, tag: str, overrides: list[str], log_dir: Path, threads: int | None = None) -> int:
    """One ``polyfuse-train`` run for fusion ``name``; output goes to ``log_dir/<task>.log``."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    task = task_name(name, tag)
    command = [sys.executable, "-m", "polyfuse.cli.train", f"model/fusion={name}", f"task_name={task}", *overrides]
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(log_dir / f"{task}.log", "w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    elapsed = time.time() - started
    record = {"command": command, "exit": code, "wall_seconds": round(elapsed, 1), "threads": threads,
              "run": (lambda run: run and run.relative_to(ROOT).as_posix())(latest_run(task))}
    (log_dir / f"{task}.json").write_text(json.dumps(record, indent=2))
    print(f"{task}: exit {code} after {elapsed:.0f} s", flush=True)
    return code


def latest_run(task: str) -> Path | None:
    """The newest run directory of ``task`` that has a ``summary.json``."""
    runs = sorted((ROOT / "outputs" / task / "runs").glob("*/summary.json"))
    return runs[-1].parent if runs else None


def fusion_parameters(run_dir: Path) -> int:
    """Parameters of the fusion module alone, rebuilt from the run's own config."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    dims = {m: int(hydra.utils.instantiate(cfg.model.encoders[m]).out_dim) for m in cfg.model.modalities}
    module = hydra.utils.instantiate(cfg.model.fusion)(dims=dims, out_dim=cfg.model.fusion_dim)
    return sum(p.numel() for p in module.parameters())


def absence_hook(modality: str, probability: float, generator: torch.Generator) -> Callable[..., Encoded]:
    """Encoder forward hook: mark ``modality`` absent for each sample with ``probability``."""
    def hook(module: torch.nn.Module, args: Any, encoded: Encoded) -> Encoded:
        absent = torch.rand(encoded.batch_size, generator=generator) < probability
        return replace(encoded, present=encoded.present_or_full() & ~absent.to(encoded.tokens.device))
    return hook


@torch.no_grad()
def robustness(run_dir: Path) -> dict[str, float]:
    """Test accuracy of the run's best checkpoint under each of :data:`CONDITIONS` (cached).

    Absence is applied to the encoders' outputs (``present=False``), so exactly the fusion's
    missing-modality path is exercised, with the same draw for every fusion.
    """
    cache = run_dir / "robustness.json"
    if cache.is_file() and set(json.loads(cache.read_text())) == set(CONDITIONS):
        return json.loads(cache.read_text())
    cfg = OmegaConf.load(run_dir / "config.yaml")
    module = hydra.utils.instantiate(cfg.model)
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    model = module.model.eval()
    datamodule = hydra.utils.instantiate(cfg.data, test_splits=["test"])
    datamodule.setup("test")
    result = {}
    for label, missing in CONDITIONS.items():
        generator = torch.Generator().manual_seed(0)
        hooks = [model.encoders[m].register_forward_hook(absence_hook(m, p, generator)) for m, p in missing.items()]
        correct = total = 0
        try:
            for batch in datamodule.test_dataloader()[0]:
                logits = model(batch).outputs
                labels = batch.targets["label"]
                correct += int((logits.argmax(-1) == labels).sum())
                total += labels.numel()
        finally:
            for hook in hooks:
                hook.remove()
        result[label] = correct / total
    cache.write_text(json.dumps(result, indent=2))
    return result


def run_overrides(run_dir: Path) -> list[str]:
    """The run's command-line overrides other than the fusion and the task name."""
    path = run_dir / ".hydra" / "overrides.yaml"
    items = list(OmegaConf.load(path)) if path.is_file() else []
    return [str(item) for item in items if not str(item).startswith(("model/fusion=", "task_name="))]


def row(name: str, tag: str) -> dict[str, Any] | None:
    run_dir = latest_run(task_name(name, tag))
    if run_dir is None:
        return None
    summary = json.loads((run_dir / "summary.json").read_text())
    test = summary.get("test", {})
    return {
        "name": name,
        "class": fusion.get_class(name).__name__,
        "test": test.get("test/acc"),
        "test_real": test.get("test_real/acc"),
        "val": summary.get("best_score"),
        "fusion_params": fusion_parameters(run_dir),
        "params": summary.get("num_parameters"),
        "fit": summary.get("fit_seconds"),
        "epochs": summary.get("epochs"),
        "run": run_dir.relative_to(ROOT).as_posix(),
        "robustness": robustness(run_dir),
        "overrides": run_overrides(run_dir),
        "task": task_name(name, tag),
    }


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def threads_used(rows: list[dict[str, Any]]) -> str:
    """How the runs were threaded, from the records ``train`` leaves next to the logs."""
    values = set()
    for r in rows:
        record = ROOT / "outputs" / "fusion_table" / f"{r['task']}.json"
        if record.is_file():
            values.add(json.loads(record.read_text()).get("threads"))
    return ", ".join(f"OMP_NUM_THREADS={v}" if v else "default threads" for v in sorted(values, key=str)) or "unknown"


def table(rows: list[dict[str, Any]], missing: list[str], tag: str) -> str:
    overrides = sorted({" ".join(r["overrides"]) for r in rows})
    command = "polyfuse-train model/fusion=<name>" + (f" {overrides[0]}" if len(overrides) == 1 and overrides[0] else "")
    script = "python scripts/fusion_table.py" + (f" --tag {tag}" if tag else "")
    lines = [
        f"Generated by `{script}` on {date.today().isoformat()} from the newest run of each fusion (`{command}`: "
        "AV-digits image + audio + text, default encoders, fusion_dim 128, seed 42, CPU). One seed per "
        "fusion: differences of a point or two are within run-to-run noise. Accuracies in %; `test_real` is the "
        "split with real recordings. The robustness columns evaluate the same checkpoint on `test` with "
        "modalities made absent at test time (`present=False` after the encoders): all audio, all text or all "
        "images absent, or each modality absent for 50% of the samples independently (1/8 of the samples then "
        "have nothing). Fit times are wall-clock on a 2-core CPU shared with other jobs "
        f"({threads_used(rows)}): indicative only, see `scripts/bench_fusion.py` for side-by-side timings.",
        "",
        "| fusion | test acc | test_real acc | best val acc | " + " | ".join(CONDITIONS)
        + " | fusion params | model params | fit time (s) | epochs |",
        "|---|" + "---:|" * (7 + len(CONDITIONS)),
    ]
    for r in sorted(rows, key=lambda r: -(r["test"] or 0.0)):
        cells = [f"`{r['name']}`", percent(r["test"]), percent(r["test_real"]), percent(r["val"])]
        cells += [percent(r["robustness"].get(c)) for c in CONDITIONS]
        cells += [f"{r['fusion_params']:,}", f"{r['params']:,}", f"{r['fit']:.0f}", str(r["epochs"])]
        lines.append("| " + " | ".join(cells) + " |")
    if missing:
        lines += ["", f"No finished run yet for: {', '.join(f'`{m}`' for m in missing)}."]
    return "\n".join(lines)


def write(docs: Path, text: str, tag: str) -> None:
    START, END = markers(tag)
    content = docs.read_text()
    if START not in content or END not in content:
        raise SystemExit(f"{docs} has no {START} ... {END} markers to write the table between")
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    docs.write_text(f"{head}{START}\n{text}\n{END}{tail}")


# unimodal baselines of the interaction table: variant -> overrides (concat over one modality)
BASELINES = {"image only": ["model/fusion=concat", "data.modalities=[image]"],
             "audio only": ["model/fusion=concat", "data.modalities=[audio]"]}
# what the label allows: chance (majority class) and the best accuracy from one modality (Bayes)
TASK_LIMITS = {"chance": {"redundant": 0.1, "unique": 0.05, "synergy": 0.1, "mixed": 0.0625},
               "best from the image alone": {"redundant": 1.0, "unique": 0.5, "synergy": 0.1, "mixed": 0.25},
               "best from the audio alone": {"redundant": 1.0, "unique": 0.1, "synergy": 0.1, "mixed": 0.25}}


def variant_dir(variant: str) -> str:
    return variant.replace(" ", "_")


def train_tasks(variant: str, overrides: list[str], tasks: list[str], seeds: list[int], out: Path,
                threads: int | None) -> int:
    """One Hydra multirun of ``variant`` over seeds x tasks (seed outermost) into ``out/<variant>``."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    fixed = BASELINES.get(variant, [f"model/fusion={variant}"])
    command = [sys.executable, "-m", "polyfuse.cli.train", "-m", f"seed={','.join(map(str, seeds))}",
               f"data={','.join(f'avdigits_{t}' for t in tasks)}", *fixed, "data.test_splits=[test]",
               f"task_name=fusion_tasks_{variant_dir(variant)}", f"hydra.sweep.dir={out / variant_dir(variant)}",
               *overrides]
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(out / f"{variant_dir(variant)}.log", "a") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    print(f"{variant}: exit {code} after {time.time() - started:.0f} s", flush=True)
    return code


def task_records(out: Path) -> pd.DataFrame:
    """One row per finished run under ``out``: variant, task, seed, test acc, epochs, fit time."""
    rows = []
    for run in find_runs(out) if any(out.rglob("summary.json")) else []:
        task = run.choices.get("data", "").removeprefix("avdigits_")
        modalities = list((run.config.get("data") or {}).get("modalities") or [])
        variant = f"{modalities[0]} only" if len(modalities) == 1 else run.fusion
        history = run.history()
        curve = history.dropna(subset=["val/acc"])["val/acc"].tolist() if "val/acc" in history else []
        rows.append({"variant": variant, "task": task, "seed": run.seed, "acc": (run.summary.get("test") or {}).get("test/acc"),
                     "epochs": run.summary.get("epochs"), "fit": run.summary.get("fit_seconds"), "curve": curve})
    return pd.DataFrame(rows, columns=["variant", "task", "seed", "acc", "epochs", "fit", "curve"])


def task_table(records: pd.DataFrame, tasks: list[str], variants: list[str], command: str) -> str:
    """Markdown: variants x tasks, test acc % mean ± 95% CI half-width (n seeds), then the limits."""
    head = "| variant | " + " | ".join(tasks) + " |"
    lines = [head, "|---|" + "---:|" * len(tasks)]
    for variant in variants:
        cells = []
        for task in tasks:
            values = records[(records["variant"] == variant) & (records["task"] == task)]["acc"].dropna().tolist()
            interval = t_interval(values)
            cells.append("–" if not values else f"{format_interval(interval.mean, interval.low, interval.high, 1, 100)} "
                         f"({len(values)})")
        lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
    for label, limits in TASK_LIMITS.items():
        lines.append(f"| *{label}* | " + " | ".join(f"*{100 * limits[t]:.1f}*" for t in tasks) + " |")
    epochs = sorted({int(e) for e in records["epochs"].dropna()})
    seconds = records["fit"].dropna()
    lines += ["", f"Test accuracy in %, mean ± half-width of the 95% CI (Student t over seeds), the number of seeds "
              f"in parentheses (one seed: no interval). {len(records)} runs, epochs {epochs}, fit time per run "
              f"{seconds.median():.0f} s median, {seconds.sum() / 60:.0f} min in all (2 shared CPU cores). "
              f"Regenerate: `{command}`."] if len(records) else ["", f"No run yet. Regenerate: `{command}`."]
    lines += differences_to(records, tasks, variants, "late")
    curves = records[(records["task"] == "synergy") & records["curve"].map(bool)]
    if not curves.empty:
        length = max(map(len, curves["curve"]))
        lines += ["", "Synergy task, validation accuracy (%) after each epoch, mean over seeds:", "",
                  "| variant | " + " | ".join(str(e + 1) for e in range(length)) + " |", "|---|" + "---:|" * length]
        for variant in [v for v in variants if v in set(curves["variant"])]:
            rows = curves[curves["variant"] == variant]["curve"].tolist()
            means = [np.mean([r[e] for r in rows if len(r) > e]) for e in range(length)]
            lines.append(f"| `{variant}` | " + " | ".join(f"{100 * m:.1f}" for m in means) + " |")
    return "\n".join(lines)


def differences_to(records: pd.DataFrame, tasks: list[str], variants: list[str], reference: str) -> list[str]:
    """Markdown: each variant's test accuracy minus ``reference``'s per task, 95% CI (paired over seeds)."""
    if reference not in set(records["variant"]):
        return []
    cells: dict[tuple[str, str], str] = {}
    for task in tasks:
        frame = records[records["task"] == task].dropna(subset=["acc"])
        if reference not in set(frame["variant"]):
            continue
        for row in pairwise_differences(frame, "acc", reference=reference).itertuples():
            if row.ci_low != row.ci_low:  # NaN: fewer than two seeds
                cells[row.a, task] = f"{100 * row.difference:+.1f}"
            else:
                mark = "" if row.distinguishable else " (n.s.)"
                cells[row.a, task] = f"{100 * row.difference:+.1f} [{100 * row.ci_low:+.1f}, {100 * row.ci_high:+.1f}]{mark}"
    shown = [v for v in variants if v != reference and any((v, t) in cells for t in tasks)]
    if not shown:
        return []
    lines = ["", f"Difference to `{reference}` in points, with its 95% CI (paired t over seeds where both ran "
             "the same seeds, else Welch); *n.s.*: the interval contains 0, the pair is not distinguishable:", "",
             "| variant | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for variant in shown:
        lines.append(f"| `{variant}` | " + " | ".join(cells.get((variant, t), "–") for t in tasks) + " |")
    return lines


def tasks_main(args: argparse.Namespace, names: list[str]) -> None:
    tasks = list(args.task_names or INTERACTION_TASKS)
    variants = [*([] if args.no_baselines else BASELINES), *names]
    if args.train:
        for variant in variants:
            train_tasks(variant, args.overrides, tasks, args.seeds, args.out, args.threads)
    flags = (" --no-baselines" if args.no_baselines else "") + (f" --task-names {' '.join(tasks)}" if args.task_names else "")
    command = (f"OMP_NUM_THREADS=1 nice -n 19 python scripts/fusion_table.py --tasks --train{flags} --names {' '.join(names)} "
               f"--seeds {' '.join(map(str, args.seeds))} --overrides {' '.join(args.overrides)}").rstrip()
    records = task_records(args.out)
    shown = [v for v in variants if v in set(records["variant"])] or variants
    text = task_table(records, tasks, shown, command)
    write(args.docs, text, "tasks")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="train the fusions before building the table")
    parser.add_argument("--names", nargs="*", default=None, help="fusions to train (default: all registered)")
    parser.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--tag", default="", help="variant name: runs go to fusion_<name>_<tag>, the table between "
                        "<!-- fusion-table:<tag>:start/end --> (e.g. --tag moddrop --overrides "
                        "+model/modality_dropout=default)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs (shared CPUs)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "fusions.md")
    parser.add_argument("--tasks", action="store_true", help="the interaction table (tasks x seeds) instead")
    parser.add_argument("--task-names", nargs="*", default=None, help="interaction tasks (default: all four)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2], help="seeds of the interaction table")
    parser.add_argument("--no-baselines", action="store_true", help="interaction table: skip the unimodal runs")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "fusion_tasks", help="interaction runs")
    args = parser.parse_args()
    # the interaction table leaves out the connectors into a language model (they have no classifier input)
    names = args.names or [n for n in fusion.available() if not (args.tasks and n.endswith("_connector"))]
    unknown = sorted(set(names) - set(fusion.available()))
    if unknown:
        raise SystemExit(f"unknown fusions {unknown}; available: {', '.join(fusion.available())}")
    if args.tasks:
        return tasks_main(args, names)
    if args.train:
        for name in names:
            train(name, args.tag, args.overrides, ROOT / "outputs" / "fusion_table", args.threads)
    shown = fusion.available() if not args.tag else names  # a variant table shows the fusions it was run for
    rows = [r for r in (row(name, args.tag) for name in shown) if r is not None]
    missing = [name for name in shown if latest_run(task_name(name, args.tag)) is None]
    text = table(rows, missing, args.tag)
    write(args.docs, text, args.tag)
    print(text)


if __name__ == "__main__":
    main()

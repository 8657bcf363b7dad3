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
``scripts/fusion_tasks.py``, whose options it takes (``--budget``, ``--out``, ``--seeds``, ...).

Examples::

    python scripts/fusion_table.py --train                   # train all fusions, then write the table
    python scripts/fusion_table.py --train --names gmu film  # (re)train some
    python scripts/fusion_table.py                           # only rebuild the table from existing runs
    python scripts/fusion_table.py --tasks --train --names late concat   # the interaction table
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
import torch
from omegaconf import OmegaConf

from polyfuse import fusion
from polyfuse.batch import Encoded
from polyfuse.cli.config import repo_root

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


def main() -> None:
    import fusion_tasks  # the interaction table (a sibling script: importable when this one runs)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="train the fusions before building the table")
    parser.add_argument("--names", nargs="*", default=None, help="fusions to train (default: all registered)")
    parser.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--tag", default="", help="variant name: runs go to fusion_<name>_<tag>, the table between "
                        "<!-- fusion-table:<tag>:start/end --> (e.g. --tag moddrop --overrides "
                        "+model/modality_dropout=default)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs (shared CPUs)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "fusions.md")
    parser.add_argument("--tasks", action="store_true", help="the interaction table (scripts/fusion_tasks.py) instead")
    fusion_tasks.add_arguments(parser)
    args = parser.parse_args()
    # the interaction table leaves out the connectors into a language model (they have no classifier input)
    names = args.names or (fusion_tasks.default_names() if args.tasks else fusion.available())
    unknown = sorted(set(names) - set(fusion.available()))
    if unknown:
        raise SystemExit(f"unknown fusions {unknown}; available: {', '.join(fusion.available())}")
    if args.tasks:
        print(fusion_tasks.tasks_main(args, names))
        return
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

"""``polyfuse-eval``: evaluate trained runs on clean data and under missing / corrupted modalities.

Examples::

    polyfuse-eval run_dir=outputs/train/runs/<time>
    polyfuse-eval run_dir=outputs/<task>/multiruns/<time>            # every run inside
    polyfuse-eval run_dir=<dir> robustness.subsets=single robustness.rates=[0,0.5,1]
    polyfuse-eval run_dir=<dir> robustness.enabled=false split=test_real
    polyfuse-eval run_dir=<dir shared by someone you trust> trust_config=true   # custom _target_s

For each run it writes ``<run>/robustness/``: ``clean.json`` (the head's metrics), and with the
robustness suite ``robustness.csv`` (one row per perturbation and level), ``summary.csv``
(clean / worst / relative robustness per perturbation) and ``curves.png``.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from polyfuse.cli.config import config_dir, register_resolvers
from polyfuse.cli.errors import user_errors
from polyfuse.cli.validate import validate_config
from polyfuse.reporting.runs import ROBUSTNESS_DIR, find_runs
from polyfuse.robustness import RobustnessConfig, evaluate_clean, evaluate_robustness, summarise
from polyfuse.robustness.plots import plot_robustness_curves
from polyfuse.training.run_dir import build_datamodule, load_model

register_resolvers()


def evaluation_loader(run_cfg: DictConfig, split: str, batch_size: int) -> Any:
    """The run's data module rebuilt without AV-digits' training-time randomness (augmentation,
    simulated missingness: :func:`polyfuse.training.run_dir.build_datamodule`); returns its in-order
    evaluation loader of ``split``, any datamodule."""
    datamodule = build_datamodule(run_cfg, evaluation=True)
    return datamodule.loader(split, batch_size=batch_size, evaluation=True)


def evaluation_batches(run_cfg: DictConfig, split: str, batch_size: int, max_batches: int | None = None
                       ) -> tuple[list[Any], dict[str, int]]:
    """Batches of :func:`evaluation_loader` (the first ``max_batches``) and the collate's padding
    values (``{"text": pad_id}``)."""
    loader = evaluation_loader(run_cfg, split, batch_size)
    batches = list(islice(iter(loader), max_batches) if max_batches else loader)
    pad_values = dict(getattr(loader.collate_fn, "pad_values", None) or {})
    return batches, pad_values


def robustness_config(cfg: DictConfig) -> RobustnessConfig:
    options = OmegaConf.to_container(cfg.robustness, resolve=True)
    corruptions = options.get("corruptions")
    return RobustnessConfig(rates=[float(r) for r in options["rates"]], subsets=options["subsets"],
                            severities=[float(s) for s in options["severities"]], corruptions=corruptions,
                            seed=int(options.get("seed", 0)), options=options.get("options") or {})


def evaluate_run(run_dir: Path, cfg: DictConfig) -> dict[str, Any]:
    """Evaluate one run directory; returns ``{"clean": {...}, "summary": [...]}``."""
    module, run_cfg = load_model(run_dir, cfg.checkpoint, trust_config=bool(cfg.get("trust_config", False)),
                                 ema=cfg.get("ema"))
    model = module.model
    metric = cfg.get("metric") or model.head.monitor
    batches, pad_values = evaluation_batches(run_cfg, cfg.split, int(cfg.batch_size), cfg.get("max_batches"))
    out = run_dir / ROBUSTNESS_DIR
    out.mkdir(parents=True, exist_ok=True)
    clean = evaluate_clean(model, batches, cfg.device)
    result: dict[str, Any] = {"run": str(run_dir), "checkpoint": str(cfg.checkpoint), "split": cfg.split,
                              "clean": clean}
    (out / "clean.json").write_text(json.dumps(result, indent=2) + "\n")
    if cfg.robustness.enabled:
        records = pd.DataFrame(evaluate_robustness(model, batches, robustness_config(cfg), cfg.device, pad_values))
        records.insert(0, "split", cfg.split)
        records.to_csv(out / "robustness.csv", index=False)
        summary = summarise(records, metric)
        summary.to_csv(out / "summary.csv", index=False)
        plot_robustness_curves(records, metric, out / "curves.png", title=f"{run_dir.name}: {metric} on {cfg.split}")
        result["summary"] = summary.to_dict(orient="records")
    return result


def _print(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="polyfuse-eval")
    for column in ("run", "clean", "relative robustness (mean over perturbations)", "files"):
        table.add_column(column)
    for result in results:
        clean = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result["clean"].items()))
        summary = result.get("summary") or []
        mean_rr = sum(row["relative_robustness"] for row in summary) / len(summary) if summary else float("nan")
        table.add_row(Path(result["run"]).name, clean, f"{mean_rr:.4f}", str(Path(result["run"]) / ROBUSTNESS_DIR))
    Console().print(table)


def run_eval(cfg: DictConfig) -> list[dict[str, Any]]:
    """Evaluate every run under ``cfg.run_dir``."""
    validate_config(cfg)
    results = []
    for run in find_runs(cfg.run_dir):
        if cfg.get("skip_existing") and (run.path / ROBUSTNESS_DIR / "robustness.csv").is_file():
            continue
        print(f"polyfuse-eval: {run.path}")
        results.append(evaluate_run(run.path, cfg))
    _print(results)
    return results


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: DictConfig) -> None:
    with user_errors("polyfuse-eval"):
        run_eval(cfg)


if __name__ == "__main__":
    main()

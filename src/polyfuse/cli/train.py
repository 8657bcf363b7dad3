"""``polyfuse-train``: compose a Hydra config, train, test, and leave a run directory.

Examples::

    polyfuse-train                                   # default AV-digits experiment
    polyfuse-train model/fusion=concat data.modalities=[image]
    polyfuse-train experiment=avdigits_audio trainer.max_epochs=5
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from polyfuse.cli.config import config_dir, register_resolvers
from polyfuse.training.launch import check_multirun_launch, is_launch_rank_zero

register_resolvers()


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    if not group:
        return []
    return [hydra.utils.instantiate(item) for item in group.values() if item is not None and "_target_" in item]


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment from a composed config; returns the run summary (also in ``summary.json``)."""
    from polyfuse.attention import set_default_backend

    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    set_default_backend(cfg.get("attention_backend", "auto"))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if is_launch_rank_zero():  # DDP ranks share rank 0's run directory (training/launch.py)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = _instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    check_multirun_launch(trainer)

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if cfg.get("test", True):
        has_best = bool(getattr(trainer.checkpoint_callback, "best_model_path", ""))
        trainer.test(model, datamodule=datamodule, ckpt_path="best" if has_best and cfg.get("train", True) else None)

    summary_path = output_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if is_launch_rank_zero():
        _print_summary(summary, output_dir)
    return summary


def _print_summary(summary: dict[str, Any], output_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="polyfuse run summary", show_header=False)
    if summary.get("monitor"):
        table.add_row(f"best {summary['monitor']}", f"{summary.get('best_score') or float('nan'):.4f}")
    for key, value in sorted(summary.get("test", {}).items()):
        table.add_row(key, f"{value:.4f}")
    table.add_row("fit time", f"{summary.get('fit_seconds', 0):.1f} s")
    table.add_row("run directory", str(output_dir))
    Console().print(table)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``cfg.optimized_metric`` from the summary (for sweepers)."""
    summary = train(cfg)
    metric = cfg.get("optimized_metric")
    if metric:
        value = summary.get("test", {}).get(metric, summary.get("best_score"))
        return None if value is None else float(value)
    return None


if __name__ == "__main__":
    main()

"""One experiment from a composed config: the body of ``polyfuse-train`` (:mod:`polyfuse.cli.train`).

Kept apart from the entry module because DataLoader workers start with ``spawn`` and re-import the
program's main module: ``polyfuse.cli.train`` stays light (Hydra and OmegaConf), while this module
imports Lightning and the training stack, which only the main process needs (docs/data.md, "Worker
start-up").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from polyfuse.cli.validate import validate_config
from polyfuse.training import resume, run_dir
from polyfuse.training.callbacks import RunArtifacts
from polyfuse.training.launch import check_multirun_launch, is_launch_rank_zero, submitit_requeue_plugins

# config sections that must match the checkpointed run when resuming (trainer may change, e.g. max_epochs)
RESUME_MUST_MATCH = ("data", "model", "seed")


def _instantiate_group(group: DictConfig | None, extra: Any = None) -> list[Any]:
    """Instantiate each ``_target_`` node of a group; ``extra(target)`` may add constructor arguments."""
    if not group:
        return []
    return [hydra.utils.instantiate(item, **(extra(item._target_) if extra else {}))
            for item in group.values() if item is not None and "_target_" in item]


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(set(saved) | set(current))
        return [d for k in keys for d in _differences(saved.get(k), current.get(k), f"{prefix}{k}.")]
    return [] if saved == current else [f"{prefix.rstrip('.')}: {saved!r} -> {current!r}"]


def _check_resume_config(cfg: DictConfig, resumed_run: Path) -> None:
    saved_file = run_dir.config_file(resumed_run)
    saved = OmegaConf.to_container(OmegaConf.load(saved_file), resolve=False)

    def plain(value: Any) -> Any:
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    problems = [d for key in RESUME_MUST_MATCH for d in _differences({key: saved.get(key)}, {key: plain(cfg.get(key))})]
    if problems:
        hint = resumed_run / ".hydra" / "overrides.yaml"
        raise ValueError(f"ckpt_path: the config differs from the run being resumed ({saved_file}):\n  "
                         + "\n  ".join(problems[:10])
                         + f"\nPass the original overrides{f' (listed in {hint})' if hint.is_file() else ''}.")


def _trainer_plugins(cfg: DictConfig) -> list[Any]:
    """The config's ``trainer.plugins`` (default: atomic checkpoint writes), plus, in a submitit job, the
    SLURM environment that leaves requeueing to submitit (training/launch.py)."""
    if "plugins" in cfg.trainer:
        configured = hydra.utils.instantiate(cfg.trainer.plugins)
        plugins = [] if configured is None else list(configured) if isinstance(configured, (list, tuple)) else [configured]
    else:
        plugins = [resume.AtomicCheckpointIO()]
    return plugins + submitit_requeue_plugins(plugins)


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one experiment from a composed config.

    Returns ``(summary, objects)``, as lightning-hydra-template's ``train()`` returns its metric and
    object dicts: ``summary`` is the run summary :class:`~polyfuse.training.RunArtifacts` also writes to
    ``summary.json`` (monitored metric, best score, test metrics, checkpoints, timings; ``{}`` without
    that callback), ``objects`` holds ``cfg``, ``datamodule``, ``model``, ``callbacks``, ``loggers``,
    ``trainer`` and ``output_dir``.

    With ``ckpt_path`` set, training resumes from that checkpoint in its own run directory:
    model, optimiser, scheduler, loop and loader position, RNG states, callbacks and loggers.
    """
    validate_config(cfg)  # types and ranges of lr, batch sizes, probabilities...: before any work
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    run_dir.configure_attention(cfg)  # `deterministic` pins `auto` to sdpa
    output_dir = Path(cfg.paths.output_dir)
    resume_from = run_dir.resume_checkpoint(cfg.get("ckpt_path"), output_dir) if cfg.get("train", True) else None
    resumed_run = run_dir.run_dir_of(resume_from) if resume_from is not None else None
    if resumed_run is not None:
        if resumed_run.resolve() != output_dir.resolve():
            with open_dict(cfg):
                cfg.paths.output_dir = str(resumed_run)
            output_dir = resumed_run
        _check_resume_config(cfg, resumed_run)
    if cfg.get("deterministic", False):
        torch.use_deterministic_algorithms(True)

    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    run_dir.set_monitored_metric(cfg, model)  # the head's, unless the config overrides it
    if resumed_run is None:
        output_dir.mkdir(parents=True, exist_ok=True)
        if is_launch_rank_zero():  # DDP ranks share rank 0's run directory (training/launch.py)
            run_dir.config_file(output_dir).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    callbacks = _instantiate_group(cfg.get("callbacks"))
    step = resume.checkpoint_step(resume_from) if resume_from is not None else 0
    csv_log = output_dir / run_dir.CSV_LOG / run_dir.METRICS
    csv_rows = resume.csv_rows_before(csv_log, step) if resume_from is not None else []
    loggers = _instantiate_group(cfg.get("logger"), extra=(lambda target: resume.logger_resume_options(
        target, output_dir, step)) if resume_from is not None else None)
    trainer_options: dict[str, Any] = {"plugins": _trainer_plugins(cfg)}
    if cfg.get("deterministic", False):
        trainer_options["deterministic"] = True
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                                 **trainer_options)
    check_multirun_launch(trainer)
    for logger in loggers:
        if type(logger).__name__ == "CSVLogger":
            resume.continue_csv_log(logger, csv_rows)

    if cfg.get("train", True):
        if resume_from is not None:
            print(f"polyfuse: resuming from {resume_from} (step {step}) in {output_dir}")
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None,
                    weights_only=True)
    if cfg.get("test", True):
        has_best = bool(getattr(trainer.checkpoint_callback, "best_model_path", ""))
        # verbose=False: Lightning's table repeats split-level metrics under every dataloader column;
        # the run summary below lists each split's metrics once
        trainer.test(model, datamodule=datamodule, ckpt_path="best" if has_best and cfg.get("train", True) else None,
                     weights_only=True, verbose=False)

    artifacts = next((c for c in callbacks if isinstance(c, RunArtifacts)), None)
    summary = dict(artifacts.summary) if artifacts is not None else {}
    if is_launch_rank_zero():
        _print_summary(summary, output_dir)
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "callbacks": callbacks, "loggers": loggers,
               "trainer": trainer, "output_dir": output_dir}
    return summary, objects


def _print_summary(summary: dict[str, Any], output_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="polyfuse run summary", show_header=False)
    if summary.get("monitor"):
        table.add_row(f"best {summary['monitor']}", f"{summary.get('best_score') or float('nan'):.4f}")
    for key, value in sorted(summary.get("test", {}).items()):
        table.add_row(key, f"{value:.4f}")
    table.add_row("fit time", f"{summary.get('fit_seconds', 0):.1f} s")
    table.add_row("epochs / steps", f"{summary.get('epochs', 0)} / {summary.get('global_step', 0)}")
    table.add_row("run directory", str(output_dir))
    for label, key in (("best checkpoint", "best_checkpoint"), ("last checkpoint", "last_checkpoint")):
        if summary.get(key):
            table.add_row(label, str(summary[key]))
    for name in ("metrics.csv", "learning_curves.png", "summary.json", "csv", "tensorboard", "wandb"):
        if (output_dir / name).exists():
            table.add_row("files", str(output_dir / name))
    Console().print(table)

"""A training run directory: where each file of a run lives, and how a run is rebuilt from it.

The one owner of the run layout that ``polyfuse-train`` leaves and every later tool reads
(``polyfuse-eval``, ``polyfuse-report``, ``polyfuse.load``, resuming with ``ckpt_path``)::

    <run>/config.yaml                     resolved config snapshot (written by rank 0 before training)
    <run>/summary.json                    run summary (RunArtifacts; also returned by ``train()``)
    <run>/metrics.csv                     one row per epoch
    <run>/checkpoints/{best,last}.ckpt    Lightning checkpoints (a file, or a directory of FSDP shards)
    <run>/checkpoints/best.safetensors    the best weights without pickle
    <run>/csv/metrics.csv                 the CSVLogger's per-step log

and of how a run is rebuilt from its ``config.yaml``: the attention backend (:func:`attention_backend`,
the same rule for training and every reload), the model (:func:`build_model`, :func:`load_model`)
and the datamodule (:func:`build_datamodule`).

The monitored metric (which validation metric selects ``checkpoints/best.ckpt``) has one source,
:func:`monitored_metric`: the task head declares it (``TaskHead.monitor`` / ``monitor_mode``, logged as
``val/<monitor>``); a config's ``monitor`` (and ``monitor_mode``) override it, and ``null`` -- the
default in ``configs/train.yaml`` -- means the head's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from polyfuse.training.checkpoint_io import is_sharded_checkpoint, match_parameter_shapes, read_checkpoint

__all__ = ["CONFIG", "SUMMARY", "METRICS", "CHECKPOINTS", "CSV_LOG", "config_file", "summary_file",
           "checkpoint_file", "resume_checkpoint", "run_dir_of", "attention_backend", "configure_attention",
           "load_config", "build_model", "build_datamodule", "load_weights", "load_model", "EVALUATION_DATA",
           "monitored_metric", "set_monitored_metric"]

CONFIG, SUMMARY, METRICS, CHECKPOINTS, CSV_LOG = "config.yaml", "summary.json", "metrics.csv", "checkpoints", "csv"

#: data options switched off when a run's data is rebuilt for evaluation (AV-digits' training-time
#: augmentation and simulated missingness), where the datamodule has them
EVALUATION_DATA: Mapping[str, Any] = {"augment": False, "missing": None, "missing_train": None}


def config_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONFIG


def summary_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / SUMMARY


# --- checkpoints -----------------------------------------------------------------------------

def _exists(path: Path) -> bool:
    return path.is_file() or is_sharded_checkpoint(path)  # a file, or a directory of FSDP shards


def _named_checkpoint(run_dir: Path, name: str, suffixes: tuple[str, ...]) -> Path | None:
    """``<run_dir>/checkpoints/<name>.<suffix>`` for the first suffix that exists, else ``None``."""
    return next((path for suffix in suffixes if _exists(path := run_dir / CHECKPOINTS / f"{name}.{suffix}")), None)


def checkpoint_file(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """Weights to load: ``best`` / ``last`` -> the run's checkpoint (``.safetensors`` preferred), or a path."""
    run_dir = Path(run_dir)
    if checkpoint in ("best", "last"):
        suffixes = ("safetensors", "ckpt")
        found = _named_checkpoint(run_dir, checkpoint, suffixes)
        if found is None:
            looked = ", ".join(f"{checkpoint}.{suffix}" for suffix in suffixes)
            raise FileNotFoundError(f"{run_dir}: no {checkpoint} checkpoint (looked for {looked} in {CHECKPOINTS}/)")
        return found
    path = Path(checkpoint)
    if not _exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def resume_checkpoint(ckpt_path: str | Path | None, output_dir: str | Path) -> Path | None:
    """The training state to resume from: ``None`` -> ``None``; ``"last"`` ->
    ``<output_dir>/checkpoints/last.ckpt`` if it exists (else ``None``: a fresh start, so a requeued
    job can always pass ``ckpt_path=last``); a path -> that file (or sharded directory), which must exist."""
    if ckpt_path in (None, ""):
        return None
    if str(ckpt_path) == "last":
        last = _named_checkpoint(Path(output_dir), "last", ("ckpt",))
        return None if last is None else last.resolve()
    path = Path(ckpt_path).expanduser().resolve()
    if not _exists(path):
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file ({path})")
    return path


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint belongs to (``<run>/checkpoints/<file>`` with ``<run>/config.yaml``)."""
    run = checkpoint.parent.parent
    return run if checkpoint.parent.name == CHECKPOINTS and config_file(run).is_file() else None


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a Lightning ``.ckpt`` file or sharded (FSDP) directory
    (``weights_only=True``: no pickle code)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    checkpoint = read_checkpoint(path)
    return checkpoint.get("state_dict", checkpoint)


# --- rebuilding a run ------------------------------------------------------------------------

def attention_backend(cfg: Mapping[str, Any]) -> str:
    """The attention backend of a run: ``attention_backend`` (default ``auto``), pinned to ``sdpa`` when
    ``deterministic`` is set (``auto`` picks backends by timing, which may differ between two processes)."""
    backend = str(cfg.get("attention_backend", "auto") or "auto")
    return "sdpa" if backend == "auto" and cfg.get("deterministic", False) else backend


def configure_attention(cfg: Mapping[str, Any]) -> str:
    """Make :func:`attention_backend` of ``cfg`` the process's default backend; returns it."""
    from polyfuse.attention import set_default_backend

    backend = attention_backend(cfg)
    set_default_backend(backend)
    return backend


def load_config(run_dir: str | Path, *, trust_config: bool = False) -> DictConfig:
    """A run's ``config.yaml``, with every ``_target_`` checked by :func:`polyfuse.safe_config.check_targets`
    (one outside polyfuse / torch / ... raises :class:`~polyfuse.errors.UntrustedConfigError` unless
    ``trust_config=True``)."""
    from polyfuse.safe_config import check_targets

    path = config_file(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {CONFIG})")
    cfg = OmegaConf.load(path)
    check_targets(cfg, trusted=trust_config, source=path, flag="trust_config=true")
    return cfg  # type: ignore[return-value]


def build_model(cfg: DictConfig) -> Any:
    """The run's LightningModule (``cfg.model``), untrained, after :func:`configure_attention`."""
    import hydra

    configure_attention(cfg)
    return hydra.utils.instantiate(cfg.model)


def build_datamodule(cfg: DictConfig, *, evaluation: bool = False) -> Any:
    """The run's datamodule (``cfg.data``); ``evaluation=True`` turns off the :data:`EVALUATION_DATA`
    options the datamodule has (for scoring a trained model: no augmentation, no simulated missingness)."""
    import hydra

    overrides = {key: value for key, value in EVALUATION_DATA.items() if key in cfg.data} if evaluation else {}
    return hydra.utils.instantiate(cfg.data, **overrides)


def load_model(run_dir: str | Path, checkpoint: str = "best", *, trust_config: bool = False,
               ema: bool | None = None) -> tuple[Any, DictConfig]:
    """Rebuild a run's LightningModule from its ``config.yaml`` (:func:`load_config`, then
    :func:`build_model`) and load its weights strictly (``checkpoint``: see :func:`checkpoint_file`;
    a run trained with ``callbacks.ema`` loads its EMA weights unless ``ema=False``:
    :func:`polyfuse.training.ema.evaluation_weights`). Returns ``(module in eval mode, config)``."""
    from polyfuse.training.ema import evaluation_weights

    cfg = load_config(run_dir, trust_config=trust_config)
    module = build_model(cfg)
    module.load_state_dict(match_parameter_shapes(evaluation_weights(run_dir, checkpoint, cfg, ema), module))
    return module.eval(), cfg


# --- the monitored metric --------------------------------------------------------------------

def monitored_metric(cfg: Mapping[str, Any], module: Any) -> tuple[str, str]:
    """``(metric, mode)`` that selects a run's best checkpoint.

    The head of ``module`` (a LightningModule with ``model.head``, or a model with ``head``) declares it:
    ``val/<head.monitor>``, ``head.monitor_mode``. The config overrides it: ``monitor`` names another
    logged metric, ``monitor_mode`` (``max`` / ``min``) its direction; a ``monitor`` other than the head's
    needs its ``monitor_mode`` (the head's direction is for the head's metric).
    """
    head = getattr(getattr(module, "model", module), "head", None)
    declared = None if head is None else (f"val/{head.monitor}", str(head.monitor_mode))
    monitor, mode = cfg.get("monitor"), cfg.get("monitor_mode")
    if monitor is None:
        if declared is None:
            raise ValueError(f"{type(module).__name__} has no task head declaring a monitored metric: "
                             "set `monitor` and `monitor_mode` in the config")
        monitor = declared[0]
    if mode is None:
        if declared is None or monitor != declared[0]:
            raise ValueError(f"monitor={monitor}: set `monitor_mode` (max or min) too; the head's "
                             f"direction is for {declared[0] if declared else 'its own metric'}")
        mode = declared[1]
    if mode not in ("max", "min"):
        raise ValueError(f"monitor_mode must be max or min, got {mode!r}")
    return str(monitor), str(mode)


def set_monitored_metric(cfg: DictConfig, module: Any) -> tuple[str, str]:
    """Write :func:`monitored_metric` into ``cfg.monitor`` / ``cfg.monitor_mode`` (what the checkpoint
    callback's ``${monitor}`` / ``${monitor_mode}`` read); returns it."""
    from omegaconf import open_dict

    monitor, mode = monitored_metric(cfg, module)
    with open_dict(cfg):
        cfg.monitor, cfg.monitor_mode = monitor, mode
    return monitor, mode

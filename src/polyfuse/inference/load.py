"""``polyfuse.load``: a training run directory or an exported folder -> an :class:`InferenceModel`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from polyfuse.inference.build import build_model
from polyfuse.inference.predict import InferenceModel
from polyfuse.inference.preprocess import AVDIGITS_DATAMODULE, Preprocessing

__all__ = ["load", "run_labels", "MANIFEST", "WEIGHTS", "is_export", "is_run"]

#: an exported folder's settings (preprocessing, labels, copied files) and weights
MANIFEST, WEIGHTS = "inference.json", "model.safetensors"
EXPORT_FORMAT = "polyfuse-export"


def is_run(path: Path) -> bool:
    from polyfuse.training.run_dir import CHECKPOINTS, config_file

    return config_file(path).is_file() and (path / CHECKPOINTS).is_dir()


def is_export(path: Path) -> bool:
    return (path / MANIFEST).is_file() and (path / WEIGHTS).is_file()


def run_labels(data: Mapping[str, Any]) -> list[str] | None:
    """Class names of a run's ``data`` config: AV-digits' ``info.json`` ``classes`` (classification
    task), or ``labels`` of the training split's reader; ``None`` when the run has none."""
    if data.get("_target_") == AVDIGITS_DATAMODULE:
        if data.get("task", "classification") != "classification":
            return None
        info = Path(str(data["root"])) / "info.json"
        classes = json.loads(info.read_text()).get("classes") if info.is_file() else None
        return None if classes is None else [str(c) for c in classes]
    split = (data.get("splits") or {}).get(data.get("train_split", "train")) or {}
    labels = split.get("labels") if hasattr(split, "get") else None
    return None if labels is None else [str(label) for label in labels]


def _load_run(run_dir: Path, checkpoint: str, ema: bool | None) -> InferenceModel:
    from polyfuse.training.ema import evaluation_weights
    from polyfuse.training.run_dir import config_file

    config = OmegaConf.load(config_file(run_dir))
    if "data" not in config:
        raise KeyError(f"{run_dir / 'config.yaml'} has no `data` section (the preprocessing is read from it)")
    module = build_model(config)
    module.load_state_dict(evaluation_weights(run_dir, checkpoint, config, ema))
    model = getattr(module, "model", module)
    preprocessing = Preprocessing.from_data_config(config.data, list(model.modalities))
    return InferenceModel(model, preprocessing, run_labels(config.data), config)


def _load_export(folder: Path) -> InferenceModel:
    from safetensors.torch import load_file

    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{folder / MANIFEST} is not a polyfuse export (format {manifest.get('format')!r})")
    config: DictConfig = OmegaConf.load(folder / "config.yaml")  # type: ignore[assignment]
    for key, relative in manifest.get("files", {}).items():  # files the config names, copied into the folder
        OmegaConf.update(config, key, str(folder / relative), force_add=True)
    module = build_model(config)
    model = getattr(module, "model", module)
    model.load_state_dict(load_file(str(folder / WEIGHTS), device="cpu"))
    preprocessing = Preprocessing.from_dict(manifest["preprocessing"], base=folder)
    return InferenceModel(model, preprocessing, manifest.get("labels"), config)


def load(path: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu",
         ema: bool | None = None) -> InferenceModel:
    """A trained model, in eval mode, with its preprocessing and tokenizer.

    Args:
        path: a run directory of ``polyfuse-train`` (``outputs/train/runs/<time>/``: ``config.yaml`` +
            ``checkpoints/``) or a folder written by ``polyfuse-export``.
        checkpoint: for a run directory, ``"best"``, ``"last"`` or a checkpoint file
            (:func:`polyfuse.training.run_dir.checkpoint_file`); an export holds one set of weights.
        device: where the model is put.
        ema: for a run trained with ``callbacks.ema``: ``None`` loads the weights its test split was
            evaluated with (the EMA weights unless the callback's ``test`` was false), ``True`` / ``False``
            the EMA / training weights (:func:`polyfuse.training.ema.evaluation_weights`, as ``polyfuse-eval``).

    Example:
        ``model = polyfuse.load("outputs/train/runs/2026-01-01_12-00-00")``, then
        ``model.predict(image="digit.png", text="a round digit")``.
    """
    path = Path(path)
    if is_export(path):
        model = _load_export(path)
    elif is_run(path):
        model = _load_run(path, checkpoint, ema)
    elif not path.exists():
        raise FileNotFoundError(f"no such run directory or exported model: {path}")
    else:
        raise FileNotFoundError(f"{path} is neither a run directory (config.yaml + checkpoints/) nor an exported "
                                f"model ({MANIFEST} + {WEIGHTS})")
    return model.to(device).eval()

"""Callbacks that leave a self-describing run directory."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


def _last_checkpoint(trainer: Trainer) -> str | None:
    for callback in trainer.checkpoint_callbacks:
        for path in (getattr(callback, "last_model_path", ""), getattr(callback, "best_model_path", "")):
            if path and Path(path).name.startswith("last"):
                return str(path)
    return None


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().cpu())
    if isinstance(value, (int, float)):
        return float(value)
    return None


class RunArtifacts(Callback):
    """Write epoch metrics (``metrics.csv``), learning curves (``learning_curves.png``) and a summary
    (``summary.json``: best/last checkpoints, best validation metric, test metrics, timings) into
    ``output_dir``; at the end of fitting, export the best weights as ``checkpoints/best.safetensors``.

    The epoch history and fit time are part of the checkpoint state, so a resumed run's files cover
    the whole run, not just the part after the restart. :attr:`summary` holds the latest summary on
    every rank (``polyfuse-train``'s ``train()`` returns it); only global rank 0 writes files.
    """

    def __init__(self, output_dir: str | Path, export_safetensors: bool = True) -> None:
        super().__init__()
        self.output_dir = Path(output_dir)
        self.export_safetensors = export_safetensors
        self.history: list[dict[str, float]] = []
        self.test_metrics: dict[str, float] = {}
        self.fit_seconds = 0.0
        self.summary: dict[str, Any] = {}
        self._seconds_before_resume = 0.0
        self._fit_start = 0.0

    def state_dict(self) -> dict[str, Any]:
        elapsed = self._seconds_before_resume + (time.perf_counter() - self._fit_start if self._fit_start else 0.0)
        return {"history": [dict(row) for row in self.history], "fit_seconds": elapsed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(row) for row in state_dict.get("history", [])]
        self._seconds_before_resume = float(state_dict.get("fit_seconds", 0.0))

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": float(trainer.current_epoch), "step": float(trainer.global_step)}
        for key, value in trainer.callback_metrics.items():
            number = _scalar(value)
            if number is not None and not key.endswith("_step"):
                row[key.removesuffix("_epoch")] = number
        self.history.append(row)
        if trainer.is_global_zero:
            self._write_history()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.fit_seconds = self._seconds_before_resume + time.perf_counter() - self._fit_start
        if trainer.is_global_zero:
            self._write_history()
            self.plot()
            if self.export_safetensors:
                self.export_best_weights(trainer)
        self.write_summary(trainer, pl_module)

    def export_best_weights(self, trainer: Trainer) -> Path | None:
        """``best.ckpt``'s ``state_dict`` as ``best.safetensors`` next to it (loads without pickle); a
        sharded (FSDP) ``best.ckpt`` directory is consolidated into full tensors on the way."""
        from polyfuse.training.checkpoint_io import is_sharded_checkpoint, read_checkpoint

        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
        if not best or not (Path(best).is_file() or is_sharded_checkpoint(best)):
            return None
        from safetensors.torch import save_file

        state = read_checkpoint(best)["state_dict"]
        target = Path(best).with_suffix(".safetensors")
        save_file({key: value.contiguous() for key, value in state.items()}, str(target))
        return target

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for key, value in trainer.callback_metrics.items():
            number = _scalar(value)
            if number is not None and key.split("/")[0] in getattr(pl_module, "test_names", ["test"]):
                self.test_metrics[key] = number
        self.write_summary(trainer, pl_module)

    def _write_history(self) -> None:
        if not self.history:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        keys = sorted({k for row in self.history for k in row}, key=lambda k: (k not in ("epoch", "step"), k))
        with open(self.output_dir / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)

    def plot(self) -> Path | None:
        """Loss and monitored metrics per epoch, train vs val, as a PNG."""
        if not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        metrics = sorted({k.split("/", 1)[1] for row in self.history for k in row if "/" in k})
        fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
        epochs = [row["epoch"] for row in self.history]
        for ax, metric in zip(axes[0], metrics):
            for stage in ("train", "val"):
                key = f"{stage}/{metric}"
                points = [(e, row[key]) for e, row in zip(epochs, self.history) if key in row]
                if points:
                    ax.plot(*zip(*points), marker="o", markersize=2, label=stage)
            ax.set_title(metric)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = self.output_dir / "learning_curves.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def write_summary(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """Update :attr:`summary`; global rank 0 also writes it to ``summary.json``."""
        from polyfuse.training.run_dir import summary_file

        checkpoint = trainer.checkpoint_callback
        monitor = getattr(checkpoint, "monitor", None)
        summary = {
            "run_dir": str(self.output_dir.resolve()),
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "fit_seconds": round(self.fit_seconds, 2),
            "num_parameters": sum(p.numel() for p in pl_module.parameters()),
            "monitor": monitor,
            "best_score": _scalar(getattr(checkpoint, "best_model_score", None)),
            "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
            "last_checkpoint": _last_checkpoint(trainer),
            "final": self.history[-1] if self.history else {},
            "test": self.test_metrics,
        }
        self.summary = summary
        if trainer.is_global_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            summary_file(self.output_dir).write_text(json.dumps(summary, indent=2) + "\n")
        return summary


class Throughput(Callback):
    """Training samples per second (moving average over ``window`` batches) in the progress bar and logs.

    Logged as ``train/samples_per_sec``; the batch size is read from ``batch.batch_size`` (a
    :class:`~polyfuse.batch.Batch`) or the first dimension of the batch.
    """

    def __init__(self, window: int = 20) -> None:
        super().__init__()
        self.window = window
        self._times: list[tuple[float, int]] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._times = [(time.perf_counter(), 0)]

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        size = getattr(batch, "batch_size", None)
        if size is None:
            size = len(batch) if hasattr(batch, "__len__") else 1
        if not self._times:
            self._times = [(time.perf_counter(), 0)]
        self._times.append((time.perf_counter(), int(size)))
        self._times = self._times[-(self.window + 1):]
        seconds = self._times[-1][0] - self._times[0][0]
        samples = sum(count for _, count in self._times[1:])
        if seconds > 0:
            pl_module.log("train/samples_per_sec", samples / seconds, on_step=True, on_epoch=False, prog_bar=True,
                          batch_size=int(size))

"""End-to-end training through the CLI's code path on the embedded dataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from polyfuse.cli.train import train


def test_fast_dev_run(compose_train, tmp_path: Path):
    cfg = compose_train(["debug=fdr"])
    train(cfg)
    assert (tmp_path / "run" / "config.yaml").is_file()


@pytest.mark.slow
def test_short_run_leaves_a_complete_run_directory(compose_train, tmp_path: Path):
    cfg = compose_train(["trainer.max_epochs=2", "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=2",
                         "+trainer.limit_test_batches=2", "data.batch_size=16", "logger=many"])
    summary, objects = train(cfg)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "summary.json", "learning_curves.png",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt", "csv/metrics.csv"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 2 and {"train/loss", "val/acc", "val/loss"} <= set(rows[0])
    saved = json.loads((run / "summary.json").read_text())
    assert saved == summary and objects["output_dir"] == run  # the returned summary is the one written
    assert saved["monitor"] == "val/acc" and 0.0 <= saved["best_score"] <= 1.0
    for split in ("test", "test_real"):
        assert 0.0 <= saved["test"][f"{split}/acc"] <= 1.0
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False, map_location="cpu")
    assert any(key.startswith("model.fusion.") for key in checkpoint["state_dict"])


@pytest.mark.slow
def test_single_modality_and_missing_modality_runs(compose_train):
    cfg = compose_train(["experiment=avdigits_audio", "debug=fdr"])
    train(cfg)
    cfg = compose_train(["debug=fdr", "data.missing={audio: 0.5, text: 0.5}"])
    train(cfg)

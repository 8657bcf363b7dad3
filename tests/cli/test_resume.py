"""A training process killed mid-epoch and resumed with ``ckpt_path=last`` ends exactly like an
uninterrupted run: same weights, same metrics, same logs (CPU, same seed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .run_factory import checkpoint_weights, csv_rows, train_process

# 6 batches per epoch, 2 epochs, checkpoints/last.ckpt every 4 steps and at each epoch end.
COMMON = ["trainer.max_epochs=2", "+trainer.limit_train_batches=6", "+trainer.limit_val_batches=2",
          "+trainer.limit_test_batches=1", "data.batch_size=16", "checkpoint_every_n_steps=4", "seed=7",
          "logger=csv", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1"]
# steps 7..12 are epoch 1; the process dies before batch 10, after the step-8 checkpoint (mid-epoch)
CRASH = ["+callbacks.crash._target_=tests.cli.crash_callback.CrashAtStep", "+callbacks.crash.step=9"]


def _train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return train_process(run_dir, *COMMON, *overrides)


_rows, _weights = csv_rows, checkpoint_weights


@pytest.mark.slow
@pytest.mark.parametrize("deterministic", [True])
def test_killed_and_resumed_run_matches_uninterrupted_run(tmp_path: Path, deterministic: bool):
    flag = f"deterministic={str(deterministic).lower()}"
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"

    done = _train(reference, flag)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = _train(resumed, flag, *CRASH)
    assert killed.returncode != 0, "the crash callback should have killed the run"
    last = resumed / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)  # loads without pickle
    assert checkpoint["global_step"] == 8 and checkpoint["epoch"] == 1, "expected the mid-epoch step-8 checkpoint"
    assert not (resumed / "summary.json").exists() or "test" not in json.loads((resumed / "summary.json").read_text())
    assert not list(resumed.glob("checkpoints/.*tmp*")), "no temporary checkpoint file may be left behind"

    again = _train(resumed, flag, "ckpt_path=last")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout

    expected = json.loads((reference / "summary.json").read_text())
    actual = json.loads((resumed / "summary.json").read_text())
    assert actual["test"] == expected["test"]
    assert actual["best_score"] == expected["best_score"]
    assert actual["global_step"] == expected["global_step"] == 12
    epochs = _rows(reference / "metrics.csv")
    assert len(epochs) == 2 and all(row["train/loss"] and row["train/acc"] and row["val/acc"] for row in epochs)
    assert _rows(resumed / "metrics.csv") == epochs  # the whole run, epoch by epoch
    assert _rows(resumed / "csv" / "metrics.csv") == _rows(reference / "csv" / "metrics.csv")  # logger continued
    for name in ("last.ckpt", "best.ckpt"):
        mine, theirs = _weights(resumed / "checkpoints" / name), _weights(reference / "checkpoints" / name)
        assert mine.keys() == theirs.keys()
        different = [k for k in mine if not torch.equal(mine[k], theirs[k])]
        assert not different, f"{name}: {len(different)} tensors differ, e.g. {different[:3]}"


def test_resume_refuses_a_different_model_config(compose_train, tmp_path: Path):
    from omegaconf import OmegaConf

    from polyfuse.cli.train import train

    saved = compose_train(["debug=fdr", "model.fusion_dim=64"])
    run = Path(saved.paths.output_dir)
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml({k: v for k, v in saved.items() if k != "hydra"}, resolve=True))
    torch.save({"global_step": 3}, run / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match=r"model.fusion_dim: 64 -> 128") as error:
        train(compose_train(["debug=fdr", "ckpt_path=last"]))
    assert "original overrides" in str(error.value) and "data." not in str(error.value)


def test_ckpt_path_last_without_a_checkpoint_starts_fresh(tmp_path: Path):
    from polyfuse.training.run_dir import resume_checkpoint

    assert resume_checkpoint("last", tmp_path) is None
    assert resume_checkpoint(None, tmp_path) is None
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        resume_checkpoint(tmp_path / "nothing.ckpt", tmp_path)

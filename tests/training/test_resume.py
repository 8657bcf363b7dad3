"""Building blocks of exact resume: RNG states, atomic writes, logs (the loader: tests/data/test_multimodal_loader.py)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from polyfuse.training.resume import AtomicCheckpointIO, csv_rows_before, rng_states, set_rng_states


def test_rng_states_round_trip_through_a_weights_only_checkpoint():
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    buffer = io.BytesIO()
    torch.save({"rng": rng_states()}, buffer)
    expected = (torch.rand(2), np.random.rand(2), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    buffer.seek(0)
    set_rng_states(torch.load(buffer, weights_only=True)["rng"])
    actual = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(actual[0], expected[0]) and np.array_equal(actual[1], expected[1]) and actual[2] == expected[2]


def test_atomic_save_never_leaves_a_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    io_plugin = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io_plugin.save_checkpoint({"step": 1}, path)
    assert io_plugin.load_checkpoint(path) == {"step": 1}

    def killed_mid_write(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io_plugin.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert io_plugin.load_checkpoint(path) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_csv_rows_before_keeps_rows_of_the_checkpointed_steps(tmp_path: Path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss_step,val/acc\n0,6,0.5,\n0,7,0.4,\n0,7,,0.25\n1,8,0.3,\n")
    assert csv_rows_before(path, 8) == [{"epoch": 0, "step": 6, "train/loss_step": 0.5},
                                        {"epoch": 0, "step": 7, "train/loss_step": 0.4},
                                        {"epoch": 0, "step": 7, "val/acc": 0.25}]
    assert csv_rows_before(tmp_path / "missing.csv", 8) == []


def test_logger_resume_options(tmp_path: Path):
    from polyfuse.training.resume import logger_resume_options

    assert logger_resume_options("lightning.pytorch.loggers.TensorBoardLogger", tmp_path, 8) == {"purge_step": 8}
    assert logger_resume_options("lightning.pytorch.loggers.WandbLogger", tmp_path, 8) == {}
    (tmp_path / "wandb" / "offline-run-20250101_000000-ab12cd34").mkdir(parents=True)
    assert logger_resume_options("lightning.pytorch.loggers.WandbLogger", tmp_path, 8) == {"id": "ab12cd34",
                                                                                          "resume": "allow"}
    assert logger_resume_options("lightning.pytorch.loggers.CSVLogger", tmp_path, 8) == {}

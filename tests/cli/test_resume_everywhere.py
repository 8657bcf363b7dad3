"""Exact mid-epoch resume on every data path, in one process and in 2-process DDP (gloo, CPU).

For AV-digits, a folder/CSV dataset, a COCO-format dataset and WebDataset shards, each with
``num_workers=2``: a ``polyfuse-train`` process is SIGKILLed mid-epoch, restarted with
``ckpt_path=last``, and its final weights, ``summary.json`` and ``metrics.csv`` equal those of an
uninterrupted run (``deterministic=true``). Under DDP every rank is killed at the same step (as
a scheduler kills a whole job) and each rank resumes its own loader position.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch

from . import format_datasets
from .run_factory import checkpoint_weights, csv_rows, train_process

HERE = Path(__file__).parent
# 64 training samples, batch 8 per process: 8 steps per epoch in one process, 4 per rank under DDP
COMMON = ["trainer.max_epochs=2", "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2",
          "data.batch_size=8", "data.eval_batch_size=8", "data.num_workers=2", "checkpoint_every_n_steps=3",
          "seed=5", "deterministic=true", "logger=csv", "callbacks.progress_bar=null",
          "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1", "trainer.num_sanity_val_steps=1"]
# the step at which the killed run dies: mid second epoch, after the (mid-epoch) checkpoint before it
KILL_AT = {1: 11, 2: 7}
DDP = ["trainer=ddp_sim"]


def _avdigits(root: Path) -> list[str]:
    return ["data.modalities=[image,text]", "data.test_splits=[test]", "+trainer.limit_train_batches=8"]


DATASETS: dict[str, Callable[[Path], list[str]]] = {
    "avdigits": _avdigits, "csv": format_datasets.csv_dataset, "coco": format_datasets.coco_dataset,
    "shards": format_datasets.shard_dataset}


def _overrides(name: str, processes: int, tmp_path: Path) -> list[str]:
    return [*DATASETS[name](tmp_path / "data"), *COMMON, *(DDP if processes == 2 else [])]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DATASETS))
def test_killed_run_resumes_exactly_in_one_process(name: str, tmp_path: Path):
    check_killed_run_resumes_exactly(name, 1, tmp_path)


def check_killed_run_resumes_exactly(name: str, processes: int, tmp_path: Path) -> None:
    """Reference run, SIGKILLed run, resumed run; the resumed run must equal the reference.
    (The 2-process cases live in test_resume_everywhere_ddp.py, so ``make test``'s two pytest
    processes can each take half of the matrix.)"""
    overrides = _overrides(name, processes, tmp_path)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"

    done = train_process(reference, *overrides)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    crash = ["+callbacks.crash._target_=tests.cli.crash_callback.CrashAtStep", f"+callbacks.crash.step={KILL_AT[processes]}"]
    killed = train_process(resumed, *overrides, *crash)
    assert killed.returncode != 0, "the crash callback should have killed the run"
    last = resumed / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    expected = json.loads((reference / "summary.json").read_text())
    steps_per_epoch = expected["global_step"] // 2
    assert steps_per_epoch == (8 if name == "avdigits" else 8 // processes)  # AV-digits: limit_train_batches=8
    assert checkpoint["global_step"] % steps_per_epoch != 0, "expected a mid-epoch checkpoint"
    loaders = checkpoint["MultimodalDataModule" if name != "avdigits" else "AVDigitsDataModule"]["train_loader"]
    assert [state["rank"] for state in loaders] == list(range(processes)) and not loaders[0]["epoch_end"]
    assert len(checkpoint["callbacks"]["ExactResume"]["rng"]) == processes

    again = train_process(resumed, *overrides, "ckpt_path=last")
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "resuming from" in again.stdout

    actual = json.loads((resumed / "summary.json").read_text())
    assert actual["global_step"] == expected["global_step"]
    assert actual["test"] == expected["test"] and actual["best_score"] == expected["best_score"]
    assert csv_rows(resumed / "metrics.csv") == csv_rows(reference / "metrics.csv")
    mine, theirs = checkpoint_weights(resumed / "checkpoints" / "last.ckpt"), checkpoint_weights(reference / "checkpoints" / "last.ckpt")
    different = [k for k in theirs if not torch.equal(mine[k], theirs[k])]
    assert mine.keys() == theirs.keys() and not different, f"{len(different)} tensors differ, e.g. {different[:3]}"

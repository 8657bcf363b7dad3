"""DDP evaluation (2 CPU processes, Lightning + gloo) scores every sample exactly once, and its
metrics equal a single-process evaluation of the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch

from polyfuse.data.avdigits import AVDigitsDataset

from . import eval_worker
from .harness import run_worker, tail

WORLD_SIZE = 2


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ddp_eval")
    proc = run_worker(eval_worker, out, timeout=400)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    return out, [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]


@pytest.mark.slow
@pytest.mark.parametrize("split", ["val", "test", "test_real"])
def test_every_sample_is_evaluated_exactly_once(ddp_run, avdigits_root: Path, split: str):
    _, ranks = ddp_run
    seen = [sample for rank in ranks for sample in rank["seen"][split]]
    expected = [record["id"] for record in AVDigitsDataset(avdigits_root, split, ["image"]).records]
    assert len(seen) == len(set(seen)), "a sample was evaluated twice (padded DistributedSampler?)"
    assert sorted(seen) == sorted(expected)
    assert all(rank["seen"][split] for rank in ranks)           # both ranks took part


@pytest.mark.slow
def test_ddp_metrics_equal_single_process_metrics(ddp_run, compose_train):
    out, ranks = ddp_run
    cfg = compose_train(eval_worker.OVERRIDES)
    model = hydra.utils.instantiate(cfg.model)
    model.load_state_dict(torch.load(out / "model.pt"))
    datamodule = hydra.utils.instantiate(cfg.data)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    single: dict[str, float] = {}
    for results in trainer.validate(model, datamodule=datamodule) + trainer.test(model, datamodule=datamodule):
        single.update(results)
    names = [name for name in single if name.endswith(("/acc", "/f1_macro"))]
    assert {"val/acc", "test/acc", "test_real/acc"} <= set(names)
    for rank in ranks:
        for name in names:
            assert rank["metrics"][name] == pytest.approx(single[name], abs=1e-6), name

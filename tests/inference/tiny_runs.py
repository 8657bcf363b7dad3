"""Test helper: a tiny trained run (two steps on AV-digits) of every task type, trained once per session.

Composed and trained as ``tests/cli/run_factory.py`` does (its ``compose_config`` and ``TINY`` budget).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from ..cli import run_factory as helpers

#: task -> the overrides of its experiment (captioning: CIDEr only, METEOR would start a JVM)
TASKS = {
    "classification": [],
    "retrieval": ["experiment=avdigits_retrieval"],
    "vqa": ["experiment=avdigits_vqa"],
    "captioning": ["experiment=avdigits_captioning", "model.head.metrics=[CIDEr]"],
    "multitask": ["experiment=avdigits_multitask", "model.head.heads.captioning.metrics=[CIDEr]"],
}
#: besides run_factory.TINY: one test split, no `auto` backend timing, small batches
COMMON = ["attention_backend=sdpa", "data.test_splits=[test]", "data.batch_size=16"]


def tiny_run(factory: pytest.TempPathFactory, task: str) -> Path:
    """The run directory of ``task`` (a key of :data:`TASKS`), trained on first use in this session."""
    from polyfuse.cli.train import train

    run = factory.getbasetemp() / "polyfuse_inference_runs" / task
    if not (run / "summary.json").is_file():
        train(helpers.compose_config("train", [*TASKS[task], *helpers.TINY, *COMMON], run))
    return run


def raw_test_inputs(run: Path, count: int = 4) -> dict[str, list[Any]]:
    """The raw inputs (file paths, strings) of the first ``count`` samples of the run's test split, in
    loader order: what a user would pass to ``predict``."""
    from polyfuse.data.avdigits import AVDigitsDataset

    data = OmegaConf.load(run / "config.yaml").data
    dataset = AVDigitsDataset(data.root, "test", data.modalities, text_field=data.text_field,
                              task=data.get("task", "classification"))
    inputs: dict[str, list[Any]] = {m: [] for m in data.modalities}
    for index, question in dataset.items[:count]:
        record = dataset.records[index]
        if "image" in inputs:
            inputs["image"].append(str(dataset.root / record["image"]))
        if "audio" in inputs:
            inputs["audio"].append(str(dataset.root / record["audio"]))
        if "text" in inputs:
            inputs["text"].append(record["qa"][question]["question"] if question >= 0 else record[data.text_field])
    return inputs


def loader_batch(run: Path, count: int = 4):
    """The first test batch of ``count`` samples, from the run's own data module (augmentation off)."""
    import hydra

    data = OmegaConf.load(run / "config.yaml").data
    datamodule = hydra.utils.instantiate(data, batch_size=count)
    datamodule.setup("test")
    return next(iter(datamodule.test_dataloader()[0]))


def assert_same_predictions(actual: Any, expected: Any, atol: float = 1e-6) -> None:
    """Predictions (nested dicts of tensors, lists, strings, numbers) equal: tensors to ``atol``."""
    import torch

    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_same_predictions(actual[key], expected[key], atol)
    elif isinstance(expected, torch.Tensor):
        torch.testing.assert_close(actual, expected, atol=atol, rtol=0)
    else:
        assert actual == expected

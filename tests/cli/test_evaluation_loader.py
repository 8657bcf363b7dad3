"""``polyfuse-eval`` rebuilds the evaluation loader of any datamodule with the batch size it asks for."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyfuse.cli.eval import evaluation_loader

from . import format_datasets
from .run_factory import compose_config


@pytest.mark.parametrize("name", ["avdigits", "csv", "coco"])
def test_evaluation_loader_scores_every_sample_once_in_order(name: str, tmp_path: Path):
    overrides = {"avdigits": [], "csv": format_datasets.csv_dataset(tmp_path / "data"),
                 "coco": format_datasets.coco_dataset(tmp_path / "data")}[name]
    cfg = compose_config("train", overrides, tmp_path / "run")
    split = "val"
    loader = evaluation_loader(cfg, split, batch_size=7)
    ids = [sample_id for batch in loader for sample_id in batch.ids]
    assert loader.batch_size == 7
    assert len(ids) == len(set(ids)) == len(loader.dataset)  # every sample once, none twice
    assert ids == [sample_id for batch in evaluation_loader(cfg, split, batch_size=7) for sample_id in batch.ids]
    if name == "avdigits":  # no augmentation and no simulated missingness when evaluating a run
        assert all(bool(batch.inputs["image"].present.all()) for batch in loader)

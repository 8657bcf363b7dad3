"""docs/baselines.md's optimiser tables (``scripts/recipe_table.py``): the polyfuse columns are what the
experiment configs compose to, so the doc cannot drift from the recipes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("recipe_table", REPO / "scripts" / "recipe_table.py")
recipe_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe_table)


def test_the_doc_tables_are_the_configs():
    text = recipe_table.DOC.read_text()
    assert recipe_table.replace_block(text, recipe_table.render()) == text, \
        "docs/baselines.md's recipe tables differ from the configs: run python scripts/recipe_table.py"


def test_settings_are_read_from_the_composed_config():
    cfg = recipe_table.compose_experiment("vilt_vqav2")
    settings = recipe_table.recipe_settings(cfg)
    assert settings["lr"] == "1e-4" and settings["betas"] == "(0.9, 0.98)" and settings["warmup"] == "10% of steps"
    assert settings["head LR multiplier"] == "10x (`model.head.`)" and settings["batch"] == "256 per process"
    with open_dict(cfg):
        cfg.model.optimizer.lr, cfg.model.optimizer_groups.head_lr_scale = 3e-4, 1.0
        cfg.model.optimizer_groups.layer_decay = 0.75
    changed = recipe_table.recipe_settings(cfg)
    assert (changed["lr"], changed["head LR multiplier"], changed["layer-wise LR decay"]) == ("3e-4", "1x", "0.75")
    cfg.model.optimizer_groups = None
    assert recipe_table.recipe_settings(cfg)["no weight decay on"] == "nothing (one group)"

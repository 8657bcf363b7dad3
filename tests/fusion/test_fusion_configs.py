"""Every fusion config instantiates and fuses; the fusion and modality-dropout overrides compose.

(``tests/test_configs.py`` also composes every config file into the full training config and builds
the whole model; here each fusion config is loaded directly, which is much faster, and fused.)
"""

from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from polyfuse import fusion
from polyfuse.cli.config import config_dir

from .fusion_cases import BATCH, make_inputs

FUSION_DIR = config_dir() / "model" / "fusion"
FUSION_CONFIGS = sorted(path.stem for path in FUSION_DIR.glob("*.yaml"))


def test_every_registered_fusion_has_a_config():
    """(And every config builds the fusion registered under its file name: see the test below.)"""
    assert set(fusion.available()) <= set(FUSION_CONFIGS)


@pytest.mark.parametrize("option", FUSION_CONFIGS)
def test_fusion_config_instantiates_and_fuses(option):
    factory = hydra.utils.instantiate(OmegaConf.load(FUSION_DIR / f"{option}.yaml"))
    module = factory(dims={"image": 12, "audio": 8, "text": 10}, out_dim=32)
    assert module.registry_name == option
    out = module.eval()(make_inputs())
    assert out.pooled.shape == (BATCH, 32) and torch.isfinite(out.pooled).all()


def test_fusion_override_composes(compose_train):
    cfg = compose_train(["model/fusion=cross_attention", "model.fusion.query=text"])
    module = hydra.utils.instantiate(cfg.model.fusion)(dims={"image": 12, "audio": 8, "text": 10}, out_dim=32)
    assert isinstance(module, fusion.CrossAttentionFusion) and module.query == "text"


def test_modality_dropout_override_composes(compose_train):
    assert compose_train().model.modality_dropout is None
    cfg = compose_train(["+model/modality_dropout=default", "model.modality_dropout.p={audio:0.5,text:0.2}"])
    dropout = hydra.utils.instantiate(cfg.model.modality_dropout)
    assert isinstance(dropout, fusion.ModalityDropout) and dropout.probability("audio") == 0.5
    assert dropout.probability("image") == 0.0 and dropout.min_present == 1

"""Every fusion config composes into the training config, instantiates and fuses; modality dropout composes."""

from __future__ import annotations

import hydra
import pytest
import torch

from fusion_cases import BATCH, make_inputs
from polyfuse import fusion
from polyfuse.cli.config import config_dir

FUSION_CONFIGS = sorted(path.stem for path in (config_dir() / "model" / "fusion").glob("*.yaml"))


def test_every_registered_fusion_has_a_config():
    """(And every config builds the fusion registered under its file name: see the test below.)"""
    assert set(fusion.available()) <= set(FUSION_CONFIGS)


@pytest.mark.parametrize("option", FUSION_CONFIGS)
def test_fusion_config_instantiates_and_fuses(compose_train, option):
    cfg = compose_train([f"model/fusion={option}"])
    factory = hydra.utils.instantiate(cfg.model.fusion)
    module = factory(dims={"image": 12, "audio": 8, "text": 10}, out_dim=cfg.model.fusion_dim)
    assert module.registry_name == option
    out = module.eval()(make_inputs())
    assert out.pooled.shape == (BATCH, cfg.model.fusion_dim) and torch.isfinite(out.pooled).all()


def test_modality_dropout_config_composes_into_the_model(compose_train):
    cfg = compose_train(["+model/modality_dropout=default", "model.modality_dropout.p={audio:0.5,text:0.2}"])
    dropout = hydra.utils.instantiate(cfg.model.modality_dropout)
    assert isinstance(dropout, fusion.ModalityDropout) and dropout.probability("audio") == 0.5
    assert dropout.probability("image") == 0.0
    model = hydra.utils.instantiate(cfg.model)
    assert isinstance(model.model.modality_dropout, fusion.ModalityDropout)


def test_no_modality_dropout_by_default(compose_train):
    assert compose_train().model.modality_dropout is None

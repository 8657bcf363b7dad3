"""The robustness evaluation on a real (untrained) AV-digits model: record layout, clean level, and
equivalence of the cached-encoding shortcut with feeding the perturbed batch through the model."""

from __future__ import annotations

from dataclasses import replace
from itertools import islice

import hydra
import pytest
import torch

from polyfuse.robustness import RobustnessConfig, corrupt, evaluate_robustness
from polyfuse.robustness.evaluate import _generator


@pytest.fixture(scope="module")
def model_and_batches(tmp_path_factory):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from polyfuse.cli.config import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data.batch_size=16", "data.augment=false"])
    GlobalHydra.instance().clear()
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data, test_splits=["test"])
    datamodule.setup("test")
    batches = list(islice(iter(datamodule.test_dataloader()[0]), 1))
    return module.model.eval(), batches


def _accuracy(model, batches) -> float:
    correct = total = 0
    with torch.no_grad():
        for batch in batches:
            logits = model(batch).outputs
            correct += int((logits.argmax(-1) == batch.targets["label"]).sum())
            total += batch.batch_size
    return correct / total


def test_records_cover_every_perturbation_and_level_and_start_clean(model_and_batches):
    model, batches = model_and_batches
    config = RobustnessConfig(rates=[0.0, 1.0], severities=[0.0, 1.0], subsets="all")
    records = evaluate_robustness(model, batches, config)
    perturbations = {r["perturbation"] for r in records}
    assert len([p for p in perturbations if p.startswith("missing:")]) == 7  # non-empty subsets of 3 modalities
    assert {"image:gaussian_noise", "image:blur", "image:occlusion", "audio:noise_snr", "text:token_dropout",
            "text:token_shuffle"} <= perturbations
    assert len(records) == 7 * 2 + 6 * 2
    clean = _accuracy(model, batches)
    for record in records:
        assert set(record) >= {"kind", "perturbation", "modalities", "level", "acc", "f1_macro"}
        if record["level"] == 0.0:
            assert record["acc"] == pytest.approx(clean)
    assert not model.training


def test_cached_missing_modality_equals_a_batch_with_the_modality_absent(model_and_batches):
    model, batches = model_and_batches
    config = RobustnessConfig(rates=[0.0, 0.5], severities=[0.0], corruptions={}, subsets="single", seed=3)
    records = {r["perturbation"]: r for r in evaluate_robustness(model, batches, config) if r["level"] == 0.5}
    for number, modality in enumerate(model.modalities):
        perturbed = []
        for index, batch in enumerate(batches):
            drop = torch.rand(batch.batch_size, generator=_generator(3, index, number)) < 0.5
            inputs = dict(batch.inputs)
            inputs[modality] = replace(inputs[modality], present=inputs[modality].present_or_full() & ~drop)
            perturbed.append(replace(batch, inputs=inputs))
        assert records[f"missing:{modality}"]["acc"] == pytest.approx(_accuracy(model, perturbed))


def test_cached_corruption_equals_a_corrupted_batch(model_and_batches):
    model, batches = model_and_batches
    config = RobustnessConfig(severities=[0.0, 0.6], corruptions={"audio": ["noise_snr"]}, missing=False, seed=1)
    records = evaluate_robustness(model, batches, config)
    assert [r["perturbation"] for r in records] == ["audio:noise_snr"] * 2
    perturbed = []
    for index, batch in enumerate(batches):
        inputs = dict(batch.inputs)
        inputs["audio"] = corrupt("noise_snr", inputs["audio"], 0.6, _generator(1, index, 1000))
        perturbed.append(replace(batch, inputs=inputs))
    assert records[1]["acc"] == pytest.approx(_accuracy(model, perturbed))


def test_unknown_corruption_for_a_modality_is_named(model_and_batches):
    model, batches = model_and_batches
    with pytest.raises(ValueError, match="blur.*audio"):
        evaluate_robustness(model, batches, RobustnessConfig(corruptions={"audio": ["blur"]}))
    with pytest.raises(ValueError, match="start at 0"):
        RobustnessConfig(rates=[0.5, 1.0])

"""CorrelationObjective (DCCA / DCCAE / GCCA / pairwise) and the auxiliary-objective mechanism of the training module."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from polyfuse.alignment import CorrelationObjective, deep_cca_loss, gcca_loss
from polyfuse.batch import Encoded
from polyfuse.fusion.translation import TranslationFusion
from polyfuse.models.multimodal import ModelOutput

from .tiny_model import make_batch, make_module

DIMS = {"image": 6, "audio": 5, "text": 4}


def encoded(batch: int = 40, seed: int = 0, absent: dict[str, list[int]] | None = None) -> dict[str, Encoded]:
    generator = torch.Generator().manual_seed(seed)
    shared = torch.randn(batch, 2, 1, generator=generator)
    out = {}
    for name, dim in DIMS.items():
        tokens = torch.randn(batch, 2, dim, generator=generator) + shared
        present = torch.ones(batch, dtype=torch.bool)
        for row in (absent or {}).get(name, []):
            present[row] = False
        out[name] = Encoded(tokens.requires_grad_(), present=present)
    return out


def output(values: dict[str, Encoded]) -> ModelOutput:
    return ModelOutput(encoded=values, fused=None, outputs=None)


def objective(**options) -> CorrelationObjective:
    torch.manual_seed(0)
    return CorrelationObjective(DIMS, **{"out_dim": 3, "hidden": 8, "weight": 1.0, **options})


def test_cca_value_is_deep_cca_loss_of_the_paired_projections():
    module = objective(modalities=["image", "audio"], method="cca")
    values = encoded(absent={"audio": [0, 5]})
    loss = module(output(values))["correlation"]
    _, projected, present = module.project(values)
    rows = present["image"] & present["audio"]
    assert int(rows.sum()) == 38
    torch.testing.assert_close(loss, deep_cca_loss(projected["image"][rows], projected["audio"][rows], reg=1e-3))


def test_gcca_value():
    module = objective(method="gcca")
    values = encoded()
    _, projected, _ = module.project(values)
    torch.testing.assert_close(module(output(values))["correlation"], gcca_loss(list(projected.values()), 3, 1e-3))


@pytest.mark.parametrize("method", ["cca", "pairwise", "gcca"])
def test_absent_values_change_nothing_and_gradients_reach_everything(method):
    modalities = ["image", "audio"] if method == "cca" else None
    module = objective(modalities=modalities, method=method, reconstruction_weight=0.5)
    absent = {"audio": [1, 2], "text": [3]}
    clean = encoded(absent=absent)
    garbage = {m: Encoded(torch.where(v.present[:, None, None], v.tokens, torch.full_like(v.tokens, float("nan"))),
                          present=v.present) for m, v in clean.items()}
    losses = module(output(clean))
    assert set(losses) == {"correlation", "reconstruction"}
    for key, value in module(output(garbage)).items():
        torch.testing.assert_close(value, losses[key])
    sum(losses.values()).backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0 and torch.isfinite(p.grad).all(), name
    for name in module.modalities:
        assert clean[name].tokens.grad.abs().sum() > 0  # the objective shapes the encoders


def test_too_few_paired_samples_gives_zero():
    module = objective(modalities=["image", "audio"], method="cca")  # min_samples = out_dim + 2 = 5
    assert module(output(encoded(batch=4)))["correlation"].item() == 0.0
    assert module(output(encoded(batch=8, absent={"audio": [0, 1, 2, 3]})))["correlation"].item() == 0.0
    assert module(output(encoded(batch=8)))["correlation"].item() < 0.0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="exactly 2 modalities"):
        objective(method="cca")
    with pytest.raises(KeyError, match="no encoder"):
        objective(modalities=["image", "video"])
    with pytest.raises(ValueError, match="'cca', 'gcca' or 'pairwise'"):
        objective(method="kcca")


def test_training_module_adds_objective_and_fusion_aux_losses():
    """One mechanism: the head's loss + FusionOutput.aux_losses + every objective's losses."""
    dcca = partial(CorrelationObjective, modalities=["image", "audio"], method="cca", out_dim=2, hidden=0)
    module = make_module(objectives={"dcca": dcca}, fusion=partial(TranslationFusion, hidden=16))
    assert module.objectives["dcca"].projections["image"][1].in_features == 8  # built with the encoders' widths
    batch = make_batch(absent={"audio": [3]})
    output, loss = module._step(batch)
    aux = module.auxiliary_losses(output, batch)
    assert {"dcca/correlation", "translation/image", "translation/audio", "translation/text"} == set(aux)
    torch.testing.assert_close(loss, module.model.head.loss(output.outputs, batch) + sum(aux.values()))
    loss.backward()
    assert all(p.grad is not None for p in module.objectives.parameters())


def test_dcca_objective_raises_the_correlation_in_training():
    module = make_module(objectives={"dcca": partial(CorrelationObjective, modalities=["image", "audio"],
                                                     method="cca", out_dim=2, hidden=0, weight=1.0)})
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    batch = make_batch(batch=64)
    first = module.auxiliary_losses(module.model(batch), batch)["dcca/correlation"].item()
    for _ in range(30):
        _, loss = module._step(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last = module.auxiliary_losses(module.model(batch), batch)["dcca/correlation"].item()
    assert last < first - 0.5  # two canonical correlations (at most -2)


def test_correlation_is_computed_in_float32_under_bfloat16_autocast():
    module = objective(modalities=["image", "audio"], method="cca")
    values = encoded()
    reference = module(output(values))["correlation"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = module(output(values))["correlation"]
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed)
    torch.testing.assert_close(mixed, reference, atol=0.05, rtol=0)

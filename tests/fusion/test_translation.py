"""Translation fusion: the zoo's contract for every translator, leave-one-out imputation, auxiliary losses."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from polyfuse import fusion
from polyfuse.batch import Encoded
from polyfuse.fusion.translation import TranslationFusion
from polyfuse.generative import RegressionTranslator, VAETranslator

from . import fusion_cases
from . import test_fusion_contract as contract
from .fusion_cases import BATCH, DIMS, make_inputs

TRANSLATORS = {
    "regression": {"hidden": 16, "translator_options": {"hidden": 8}},
    "mvae": {"hidden": 16, "translator": "mvae", "translator_options": {"hidden": 8, "latent_dim": 4}},
    "mmvae": {"hidden": 16, "translator": "mmvae", "translator_options": {"hidden": 8, "latent_dim": 4}},
}

CONTRACT = [
    ("test_shapes", {}), ("test_padded_values_change_nothing", {"garbage": float("nan")}),
    ("test_padding_length_changes_nothing", {}), ("test_absent_values_change_nothing", {"garbage": float("nan")}),
    ("test_absent_values_change_nothing", {"garbage": None}), ("test_modality_left_out_of_the_dict_is_absent", {}),
    ("test_plain_tensors_are_accepted", {}), ("test_finite_with_one_modality_absent_for_half_the_batch", {}),
    ("test_finite_with_all_but_one_absent", {"kept": 1}), ("test_finite_with_everything_absent", {}),
    ("test_per_sample_independence", {}), ("test_every_parameter_receives_a_gradient", {}),
    ("test_attention_maps", {}), ("test_two_modalities", {}), ("test_minimum_number_of_modalities", {}),
    ("test_docstring_cites_paper_and_missing_strategy", {}),
]


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one intra-op thread (root conftest)


@pytest.mark.parametrize("translator", list(TRANSLATORS))
@pytest.mark.parametrize(("check", "kwargs"), CONTRACT, ids=[f"{c}-{k}" for c, k in CONTRACT])
def test_contract(monkeypatch, translator, check, kwargs):
    """The fusion zoo's contract (tests/fusion/test_fusion_contract.py) with each translator."""
    monkeypatch.setitem(fusion_cases.SMALL, "translation", TRANSLATORS[translator])
    getattr(contract, check)("translation", **kwargs)


def build(kind: str = "regression", **options) -> TranslationFusion:
    torch.manual_seed(0)
    return fusion.build("translation", dims=DIMS, out_dim=fusion_cases.OUT_DIM, **{**TRANSLATORS[kind], **options})


def test_registered_and_configurable():
    assert fusion.get_class("translation") is TranslationFusion
    assert isinstance(build().translator, RegressionTranslator)
    assert isinstance(build("mmvae").translator, VAETranslator) and build("mmvae").translator.vae.posterior_kind == "moe"
    with pytest.raises(ValueError, match="unknown translator"):
        build("regression", translator="nearest")


@pytest.mark.parametrize("translator", list(TRANSLATORS))
def test_prediction_of_a_modality_ignores_that_modality(translator):
    """Leave-one-out: the prediction for m is a function of the other modalities only."""
    module = build(translator).eval()
    pooled, present = module.embeddings(module.prepare(make_inputs()))
    changed = dict(pooled, image=torch.randn_like(pooled["image"]) * 10)
    with torch.no_grad():
        a, b = module.translator.translate(pooled, present), module.translator.translate(changed, present)
    torch.testing.assert_close(a["image"], b["image"])
    assert not torch.allclose(a["audio"], b["audio"])


def test_absent_modality_is_replaced_by_its_translation():
    module = build().eval()
    inputs = make_inputs(presence=torch.ones(BATCH, 3, dtype=torch.bool))
    inputs["image"] = replace(inputs["image"], present=torch.zeros(BATCH, dtype=torch.bool))
    with torch.no_grad():
        out = module(inputs)
        pooled, present = module.embeddings(module.prepare(inputs))
        imputed = module.translator.translate(pooled, present)["image"]
        expected = module.mlp(torch.cat([imputed, pooled["audio"], pooled["text"]], -1))
    torch.testing.assert_close(out.pooled, expected)


@pytest.mark.parametrize("translator", list(TRANSLATORS))
def test_aux_losses_ignore_absent_values_and_reach_every_parameter(translator):
    module = build(translator).train()
    inputs = make_inputs()
    torch.manual_seed(1)
    out = module(inputs)
    assert out.aux_losses and all(key.startswith("translation/") for key in out.aux_losses)
    torch.manual_seed(1)
    garbage = module(contract.with_garbage(inputs, "absent", float("nan")))
    for key, value in out.aux_losses.items():
        torch.testing.assert_close(value, garbage.aux_losses[key])
    (out.pooled.sum() + sum(out.aux_losses.values())).backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_loss_weight_and_detaching():
    inputs = {m: replace(enc, tokens=enc.tokens.clone().requires_grad_()) for m, enc in make_inputs().items()}
    assert build(loss_weight=0.0)(inputs).aux_losses == {}
    doubled = build(loss_weight=2.0)(inputs).aux_losses
    single = build(loss_weight=1.0)(inputs).aux_losses
    for key in single:
        torch.testing.assert_close(doubled[key], 2 * single[key])
    tokens = [enc.tokens for enc in inputs.values()]
    loss = sum(build()(inputs).aux_losses.values())  # detach_inputs=True by default
    assert not loss.requires_grad or all(g is None for g in torch.autograd.grad(loss, tokens, allow_unused=True))
    loss = sum(build(detach_inputs=False)(inputs).aux_losses.values())
    assert all(g is not None and g.abs().sum() > 0 for g in torch.autograd.grad(loss, tokens))


def test_translator_learns_a_cross_modal_map():
    """Image = linear map of audio: after training, the imputed image embedding is far better than the mean."""
    torch.manual_seed(0)
    dims = {"image": 6, "audio": 12}
    mixing = torch.randn(12, 6)
    module = fusion.build("translation", dims=dims, out_dim=8, hidden=0, translator_options={"hidden": 32})
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)

    def batch(n: int = 128) -> dict[str, Encoded]:
        audio = torch.randn(n, 1, 12)
        return {"image": Encoded(audio @ mixing), "audio": Encoded(audio)}

    for _ in range(150):
        loss = sum(module(batch()).aux_losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()
    data = batch(512)
    with torch.no_grad():
        pooled, present = module.embeddings(module.prepare(data))
        predicted = module.translator.translate(pooled, present)["image"]
    error = (predicted - pooled["image"]).pow(2).mean()
    assert error < 0.2 * (pooled["image"] - pooled["image"].mean(0)).pow(2).mean()

"""The contract every registered fusion must meet: shapes, masking, missing modalities, independence, gradients."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from polyfuse import fusion
from polyfuse.batch import Encoded

from .fusion_cases import ATTENTION, BATCH, DIMS, OUT_DIM, PRESENCE, SMALL, TOKEN_LEVEL, make_fusion, make_inputs


def run(module: fusion.Fusion, inputs: dict, **kwargs) -> fusion.FusionOutput:
    with torch.no_grad():
        return module(inputs, **kwargs)


def assert_same(a: fusion.FusionOutput, b: fusion.FusionOutput, exact: bool = True) -> None:
    compare = torch.equal if exact else (lambda x, y: torch.allclose(x, y, atol=1e-5, rtol=1e-5))
    assert compare(a.pooled, b.pooled), (a.pooled - b.pooled).abs().max()
    assert (a.tokens is None) == (b.tokens is None)
    if a.tokens is not None:
        assert torch.equal(a.mask, b.mask)
        assert compare(a.tokens, b.tokens), (a.tokens - b.tokens).abs().max()


def with_garbage(inputs: dict[str, Encoded], where: str, value: float | None = None, seed: int = 1) -> dict:
    """Overwrite padded (``where="padding"``) or absent (``"absent"``) slots with garbage (NaN/inf/huge)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, enc in inputs.items():
        if where == "padding":
            slot = ~enc.mask_or_full()
        else:
            slot = ~enc.present_or_full()[:, None].expand_as(enc.mask_or_full())
        garbage = torch.randn(enc.tokens.shape, generator=generator) * 1e4 if value is None else \
            torch.full_like(enc.tokens, value)
        tokens = torch.where(slot[..., None], garbage, enc.tokens)
        mask = enc.mask
        if where == "absent":  # the padding mask of an absent sample is garbage too
            noise = torch.rand(enc.mask.shape, generator=generator) < 0.5
            mask = torch.where(slot, noise, enc.mask)
        out[name] = Encoded(tokens, mask, enc.present)
    return out


def test_registry_has_every_family():
    expected = {"concat", "sum", "mean", "late", "early", "hybrid", "cross_attention", "co_attention", "gmu", "film",
                "bilinear", "tensor", "lmf", "mult", "mbt", "perceiver"}
    assert expected <= set(fusion.available())
    exported = {name for name in fusion.available() if fusion.get_class(name).__name__ in fusion.__all__}
    assert exported <= set(SMALL), "add tiny test options for every new fusion in fusion_cases.SMALL"


def test_shapes(name):
    module = make_fusion(name).eval()
    out = run(module, make_inputs())
    assert out.pooled.shape == (BATCH, OUT_DIM)
    assert out.attentions == {}
    if name in TOKEN_LEVEL:
        assert out.tokens is not None and out.mask is not None
        assert out.tokens.shape[:1] == (BATCH,) and out.tokens.shape[-1] == OUT_DIM
        assert out.mask.shape == out.tokens.shape[:2] and out.mask.dtype == torch.bool
        assert torch.all(out.tokens[~out.mask] == 0), "masked output tokens must be exactly zero"
        assert out.mask.any(1).all(), "every sample keeps at least one valid output token"
    else:
        assert out.tokens is None and out.mask is None


@pytest.mark.parametrize("garbage", [None, float("nan"), float("inf")], ids=["huge", "nan", "inf"])
def test_padded_values_change_nothing(name, garbage):
    module = make_fusion(name).eval()
    inputs = make_inputs()
    assert_same(run(module, inputs), run(module, with_garbage(inputs, "padding", garbage)))


def test_padding_length_changes_nothing(name):
    """Extra padded positions (more keys that are all masked) must not change the result."""
    module = make_fusion(name).eval()
    inputs = make_inputs()
    padded = {}
    for modality, enc in inputs.items():
        extra = torch.randn(BATCH, 3, enc.dim)
        padded[modality] = Encoded(torch.cat([enc.tokens, extra], 1),
                                   torch.cat([enc.mask, torch.zeros(BATCH, 3, dtype=torch.bool)], 1), enc.present)
    a, b = run(module, inputs), run(module, padded)
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=1e-5)
    if a.tokens is not None:
        assert a.mask.sum() == b.mask.sum()
        torch.testing.assert_close(a.tokens[a.mask], b.tokens[b.mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("garbage", [None, float("nan")], ids=["huge", "nan"])
def test_absent_values_change_nothing(name, garbage):
    module = make_fusion(name).eval()
    inputs = make_inputs()
    assert_same(run(module, inputs), run(module, with_garbage(inputs, "absent", garbage)))


def test_modality_left_out_of_the_dict_is_absent(name):
    module = make_fusion(name).eval()
    inputs = make_inputs()
    inputs["audio"] = replace(inputs["audio"], present=torch.zeros(BATCH, dtype=torch.bool))
    left_out = {m: enc for m, enc in inputs.items() if m != "audio"}
    a, b = run(module, inputs), run(module, left_out)
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=1e-5)


def test_plain_tensors_are_accepted(name):
    module = make_fusion(name).eval()
    plain = {m: enc.tokens for m, enc in make_inputs().items()}
    plain["audio"] = plain["audio"].mean(1)  # a pooled (B, D) vector is one token
    out = run(module, plain)
    assert out.pooled.shape == (BATCH, OUT_DIM) and torch.isfinite(out.pooled).all()


def assert_finite(out: fusion.FusionOutput) -> None:
    assert torch.isfinite(out.pooled).all()
    if out.tokens is not None:
        assert torch.isfinite(out.tokens).all()
    for key, probs in out.attentions.items():
        assert torch.isfinite(probs).all(), key


def test_finite_with_one_modality_absent_for_half_the_batch(name):
    module = make_fusion(name).eval()
    presence = torch.ones(BATCH, 3, dtype=torch.bool)
    presence[: BATCH // 2, 1] = False
    assert_finite(run(module, with_garbage(make_inputs(presence=presence), "absent", float("nan")),
                      return_attention=True))


@pytest.mark.parametrize("kept", range(3))
def test_finite_with_all_but_one_absent(name, kept):
    module = make_fusion(name).eval()
    presence = torch.zeros(BATCH, 3, dtype=torch.bool)
    presence[:, kept] = True
    assert_finite(run(module, with_garbage(make_inputs(presence=presence), "absent", float("nan")),
                      return_attention=True))


def test_finite_with_everything_absent(name):
    module = make_fusion(name).eval()
    presence = torch.zeros(BATCH, 3, dtype=torch.bool)
    assert_finite(run(module, with_garbage(make_inputs(presence=presence), "absent", float("nan")),
                      return_attention=True))


def test_per_sample_independence(name):
    module = make_fusion(name).eval()
    inputs = make_inputs()
    full = run(module, inputs)
    changed = {m: replace(enc, tokens=enc.tokens.clone()) for m, enc in inputs.items()}
    for enc in changed.values():
        enc.tokens[3] = torch.randn_like(enc.tokens[3]) * 5
    other = run(module, changed)
    keep = torch.arange(BATCH) != 3
    torch.testing.assert_close(full.pooled[keep], other.pooled[keep], atol=1e-6, rtol=1e-6)
    single = run(module, {m: Encoded(enc.tokens[5:6], enc.mask[5:6], enc.present[5:6]) for m, enc in inputs.items()})
    torch.testing.assert_close(full.pooled[5:6], single.pooled, atol=1e-5, rtol=1e-5)


def test_every_parameter_receives_a_gradient(name):
    module = make_fusion(name).train()
    out = module(make_inputs(), return_attention=False)
    generator = torch.Generator().manual_seed(0)
    loss = (out.pooled * torch.randn(out.pooled.shape, generator=generator)).sum()
    if out.tokens is not None:
        loss = loss + (out.tokens * torch.randn(out.tokens.shape, generator=generator)).sum()
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"{name}: parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_attention_maps(name):
    module = make_fusion(name).eval()
    out = run(module, make_inputs(), return_attention=True)
    if name not in ATTENTION:
        assert out.attentions == {}
        return
    assert out.attentions, f"{name} returned no attention maps"
    for key, probs in out.attentions.items():
        assert probs.dim() == 4 and probs.shape[0] == BATCH, key
        assert (probs >= 0).all(), key
        sums = probs.sum(-1)
        ones, zeros = torch.isclose(sums, torch.ones_like(sums), atol=1e-5), sums.abs() < 1e-6
        assert (ones | zeros).all(), f"{key}: rows must sum to 1 over valid keys, or 0 without any"
        assert ones.any(), key
    assert_same(out, run(module, make_inputs()), exact=False)  # asking for maps does not change the result


def test_two_modalities(name):
    dims = {"image": DIMS["image"], "text": DIMS["text"]}
    module = make_fusion(name, dims=dims).eval()
    presence = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    out = run(module, make_inputs(presence=presence, dims=dims, batch=4))
    assert out.pooled.shape == (4, OUT_DIM) and torch.isfinite(out.pooled).all()


def test_minimum_number_of_modalities(name):
    cls = fusion.get_class(name)
    if cls.min_modalities < 2:
        make_fusion(name, dims={"image": 12})
        return
    with pytest.raises(ValueError, match="at least 2 modalities"):
        make_fusion(name, dims={"image": 12})


def test_docstring_cites_paper_and_missing_strategy(name):
    doc = fusion.get_class(name).__doc__ or ""
    assert any(str(year) in doc for year in range(1990, 2030)), f"{name}: cite the paper (authors, year)"
    assert "Missing modalities" in doc or "missing modalities" in doc.lower()
    assert "modalities" in doc.lower()

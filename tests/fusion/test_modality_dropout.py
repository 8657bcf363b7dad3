"""ModalityDropout: per-sample modality drops in training, never below min_present, identity in eval."""

from __future__ import annotations

import pytest
import torch

from polyfuse.batch import Encoded
from polyfuse.fusion import ModalityDropout


def encoded(batch: int = 2000, present: torch.Tensor | None = None) -> dict[str, Encoded]:
    torch.manual_seed(0)
    out = {}
    for i, name in enumerate(("image", "audio", "text")):
        out[name] = Encoded(torch.randn(batch, 2, 4), None, None if present is None else present[:, i])
    return out


def presence(result: dict[str, Encoded]) -> torch.Tensor:
    return torch.stack([enc.present_or_full() for enc in result.values()], 1)


def test_eval_mode_is_the_identity():
    inputs = encoded()
    result = ModalityDropout(0.9).eval()(inputs)
    assert all(result[m] is inputs[m] for m in inputs)


def test_drop_rate_and_never_all_dropped():
    torch.manual_seed(1)
    kept = presence(ModalityDropout(0.3).train()(encoded()))
    assert kept.sum(1).min() >= 1
    # P(drop) = 0.3, except that the 0.3^3 all-dropped samples get one modality back
    expected = 0.3 - 0.3 ** 3 / 3
    assert abs((~kept).float().mean().item() - expected) < 0.03


def test_p_one_keeps_exactly_min_present():
    for min_present in (1, 2):
        kept = presence(ModalityDropout(1.0, min_present=min_present).train()(encoded(200)))
        assert (kept.sum(1) == min_present).all()
        assert kept.float().mean(0).min() > 0.1  # the survivor is chosen at random, not always the first


def test_absent_modalities_stay_absent_and_inputs_are_not_mutated():
    original = torch.tensor([[True, False, False], [True, True, False], [False, True, True]]).repeat(100, 1)
    inputs = encoded(300, original)
    kept = presence(ModalityDropout(1.0, min_present=2).train()(inputs))
    assert not (kept & ~original).any(), "a modality absent in the input is never made present"
    assert torch.equal(kept.sum(1), original.sum(1).clamp(max=2))
    assert torch.equal(presence(inputs), original)


def test_per_modality_probabilities():
    torch.manual_seed(2)
    kept = presence(ModalityDropout({"audio": 0.5}).train()(encoded()))
    assert kept[:, 0].all() and kept[:, 2].all()
    assert 0.4 < (~kept[:, 1]).float().mean().item() < 0.6


@pytest.mark.parametrize("kwargs", [{"p": 1.5}, {"p": {"audio": -0.1}}, {"p": 0.1, "min_present": 0}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        ModalityDropout(**kwargs)

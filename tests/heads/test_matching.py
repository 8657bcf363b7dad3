"""ITMHead: mismatched pairs fused by the model's own fusion, hard negatives, never a duplicate."""

from __future__ import annotations

from functools import partial

import torch

from polyfuse.heads import ITMHead

from . import head_cases as cases


def test_negatives_are_fused_and_every_parameter_trains() -> None:
    model = cases.model(partial(ITMHead, embed_dim=8), fusion="early")
    batch = cases.batch(6)
    out = model(batch)
    assert out.outputs["logits"].shape == (12,)
    assert out.outputs["labels"].tolist() == [1.0] * 6 + [0.0] * 6
    terms = model.head.loss(out.outputs, batch)
    assert set(terms) == {"loss", "itm_loss", "itc_loss"}
    metrics = model.head.make_metrics()
    model.head.update_metrics(metrics, out.outputs, batch)
    assert 0.0 <= metrics.compute()["itm_acc"].item() <= 1.0
    cases.assert_all_parameters_get_gradients(model, terms["loss"], ignore=("missing", "fusion.out"))


def test_duplicate_text_is_never_a_negative() -> None:
    head = ITMHead(16, {"image": 16, "text": 16}, hard_negatives=False)
    batch = cases.batch(3, duplicate=(0, 1))   # samples 0 and 1 share their text: only sample 2 differs
    valid = torch.ones(3, dtype=torch.bool)
    for _ in range(20):
        partners = head._negative_partners(batch, valid, None)
        assert partners[0] == 2 and partners[1] == 2 and partners[2] in (0, 1)


def test_hard_negatives_follow_the_similarity() -> None:
    head = ITMHead(16, {"image": 16, "text": 16}, temperature=0.01)
    batch = cases.batch(4)
    similarity = torch.eye(4) + torch.tensor([[0, 0.9, 0, 0], [0.9, 0, 0, 0], [0, 0, 0, 0.9], [0, 0, 0.9, 0]])
    partners = head._negative_partners(batch, torch.ones(4, dtype=torch.bool), similarity)
    assert partners.tolist() == [1, 0, 3, 2]


def test_absent_text_gets_no_negative() -> None:
    head = ITMHead(16, {"image": 16, "text": 16}, hard_negatives=False)
    batch = cases.batch(4)
    valid = torch.tensor([True, False, True, True])
    partners = head._negative_partners(batch, valid, None)
    assert partners[1] == -1 and 1 not in partners.tolist()

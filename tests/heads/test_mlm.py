"""MLMHead: BERT masking, locating the text in a single-stream sequence, gradients."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from polyfuse.fusion.base import FusionOutput
from polyfuse.heads import MLMHead
from polyfuse.heads.mlm import IGNORE, mask_tokens

from . import head_cases as cases


def test_mask_tokens_follows_bert() -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 50, (400, 50), generator=g)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = False  # e.g. [CLS]
    corrupted, labels = mask_tokens(ids, maskable, vocab_size=50, mask_token_id=4, mask_prob=0.15, generator=g)
    picked = labels != IGNORE
    assert not picked[:, 0].any()
    assert picked.float().mean().item() == pytest.approx(0.15 * 49 / 50, abs=0.01)
    assert (labels[picked] == ids[picked]).all() and (corrupted[~picked] == ids[~picked]).all()
    as_mask = (corrupted[picked] == 4).float().mean().item()
    unchanged = (corrupted[picked] == ids[picked]).float().mean().item()
    assert as_mask == pytest.approx(0.8, abs=0.03) and unchanged == pytest.approx(0.1 + 0.1 / 50, abs=0.03)


def test_every_row_with_maskable_tokens_predicts_something() -> None:
    ids = torch.randint(5, 9, (64, 3))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[5] = False
    _, labels = mask_tokens(ids, maskable, 9, 4, mask_prob=0.01)
    predicted = (labels != IGNORE).any(dim=1)
    assert predicted.sum() == 63 and not predicted[5]


def test_head_predicts_only_text_positions_and_trains_everything() -> None:
    head = partial(MLMHead, vocab_size=cases.VOCAB, mask_token_id=cases.MASK, mask_prob=0.3)
    model = cases.model(head, fusion="early")
    batch = cases.batch(6)
    out = model(batch)
    logits, labels = out.outputs["logits"], out.outputs["labels"]
    assert logits.shape == (6, batch.inputs["text"].values.shape[1], cases.VOCAB)
    picked = labels != IGNORE
    specials = torch.isin(batch.inputs["text"].values, torch.tensor([0, 1, 2, 3, 4]))
    assert picked.any() and not (picked & specials).any()
    loss = model.head.loss(out.outputs, batch)
    metrics = model.head.make_metrics()
    model.head.update_metrics(metrics, out.outputs, batch)
    assert 0.0 <= metrics.compute()["mlm_acc"].item() <= 1.0
    # MLM reads EarlyFusion's tokens, not its pooled [CLS] (fusion.pooler)
    cases.assert_all_parameters_get_gradients(model, loss, ignore=("missing", "fusion.pooler"))


def test_layout_mismatch_is_explained() -> None:
    head = MLMHead(16, {"image": 16, "text": 16}, vocab_size=10, mask_token_id=4, prefix_tokens=0, suffix_tokens=0)
    from polyfuse.batch import Encoded
    encoded = {"image": Encoded(torch.zeros(2, 3, 16)), "text": Encoded(torch.zeros(2, 4, 16))}
    fused = FusionOutput(pooled=torch.zeros(2, 16), tokens=torch.arange(7.0)[None, :, None].expand(2, 7, 16))
    assert head.text_tokens(fused, encoded)[0, :, 0].tolist() == [3.0, 4.0, 5.0, 6.0]
    fused.tokens = torch.zeros(2, 9, 16)
    with pytest.raises(ValueError, match="cannot locate"):
        head.text_tokens(fused, encoded)
    with pytest.raises(ValueError, match="token-level"):
        head.text_tokens(FusionOutput(pooled=torch.zeros(2, 16)), encoded)

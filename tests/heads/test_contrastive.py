"""ContrastiveHead: dual-stream embeddings, CLIP/SigLIP losses over pairs, retrieval metrics."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from polyfuse.batch import Encoded
from polyfuse.heads import ContrastiveHead
from polyfuse.heads.base import HeadContext
from polyfuse.losses import ContrastiveLoss, SigLipLoss
from polyfuse.metrics import retrieval_recall

from . import head_cases as cases


def test_model_without_fusion_trains_every_parameter() -> None:
    model = cases.model(partial(ContrastiveHead, embed_dim=8), fusion=None)
    assert model.fusion is None
    batch = cases.batch()
    out = model(batch)
    assert out.fused is None
    emb = out.outputs["embeddings"]
    assert emb["image"].shape == (6, 8) and torch.allclose(emb["text"].norm(dim=-1), torch.ones(6))
    loss = model.head.loss(out.outputs, batch)
    torch.testing.assert_close(loss, ContrastiveLoss()(emb["image"], emb["text"], out.outputs["logit_scale"]))
    cases.assert_all_parameters_get_gradients(model, loss)


def _encoded(batch: int = 5, seed: int = 0) -> dict[str, Encoded]:
    g = torch.Generator().manual_seed(seed)
    return {m: Encoded(torch.randn(batch, 3, 6, generator=g)) for m in ("image", "audio", "text")}


def test_three_modalities_sum_every_pair() -> None:
    head = ContrastiveHead(None, {"image": 6, "audio": 6, "text": 6}, embed_dim=4)
    encoded = _encoded()
    out = head(None, cases.batch(5), HeadContext(encoded))
    terms = head.loss(out, cases.batch(5))
    assert set(terms) == {"loss", "image_audio/loss", "image_text/loss", "audio_text/loss"}
    emb, scale = out["embeddings"], out["logit_scale"]
    expected = sum(ContrastiveLoss()(emb[a], emb[b], scale) for a, b in head.pairs)
    torch.testing.assert_close(terms["loss"], expected)


def test_siglip_variant_uses_scale_and_bias() -> None:
    head = ContrastiveHead(None, {"image": 6, "text": 6}, embed_dim=4, loss="siglip")
    out = head(None, cases.batch(5), HeadContext(_encoded()))
    assert out["logit_scale"].item() == pytest.approx(10.0) and out["logit_bias"].item() == pytest.approx(-10.0)
    expected = SigLipLoss()(out["embeddings"]["image"], out["embeddings"]["text"], out["logit_scale"], out["logit_bias"])
    torch.testing.assert_close(head.loss(out, cases.batch(5)), expected)


def test_absent_samples_are_left_out_of_the_pair() -> None:
    head = ContrastiveHead(None, {"image": 6, "text": 6}, embed_dim=4)
    encoded = _encoded()
    present = torch.tensor([True, True, False, True, True])
    encoded["text"] = Encoded(encoded["text"].tokens, present=present)
    out = head(None, cases.batch(5), HeadContext(encoded))
    emb = out["embeddings"]
    expected = ContrastiveLoss()(emb["image"][present], emb["text"][present], out["logit_scale"])
    torch.testing.assert_close(head.loss(out, cases.batch(5)), expected)


def test_temperature_is_clamped_and_learnable() -> None:
    head = ContrastiveHead(None, {"image": 6, "text": 6}, init_temperature=0.001)
    out = head(None, cases.batch(5), HeadContext(_encoded()))
    assert out["logit_scale"].item() == pytest.approx(100.0)
    assert head.logit_scale.requires_grad
    assert not ContrastiveHead(None, {"image": 6, "text": 6}, learn_temperature=False).logit_scale.requires_grad


def test_metrics_treat_duplicate_texts_as_one_target() -> None:
    model = cases.model(partial(ContrastiveHead, embed_dim=8, dedupe=["text"]), fusion=None).eval()
    batch = cases.batch(6, duplicate=(0, 3))  # samples 0 and 3 share their text
    metrics = model.head.make_metrics()
    with torch.no_grad():
        out = model(batch)
    model.head.update_metrics(metrics, out.outputs, batch)
    values = metrics.compute()
    emb = out.outputs["embeddings"]
    unique_text = emb["text"][[0, 1, 2, 4, 5]]
    owner = torch.tensor([0, 1, 2, 0, 3, 4])
    expected = retrieval_recall(unique_text @ emb["image"].T, (1, 5, 10), owner)
    assert values["text_to_image/R@1"] == pytest.approx(expected["a_to_b/R@1"])
    assert values["image_to_text/R@5"] == pytest.approx(expected["b_to_a/R@5"])
    assert values["rsum"] == pytest.approx(expected["rsum"])


def test_no_retrieval_metrics_while_training() -> None:
    model = cases.model(partial(ContrastiveHead, embed_dim=8), fusion=None)
    metrics = model.head.make_metrics("train")
    batch = cases.batch()
    model.head.update_metrics(metrics, model(batch).outputs, batch)
    assert metrics.compute() == {}


def test_sources_embed_a_target_with_the_modality_encoder() -> None:
    model = cases.model(partial(ContrastiveHead, embed_dim=8, sources={"text": "caption_ids"}), fusion=None).eval()
    batch = cases.batch()
    with torch.no_grad():
        out = model(batch)
        captions = batch.targets["caption_ids"]
        from polyfuse.batch import ModalityInput
        expected = model.head.embed(model.encoders["text"](ModalityInput(captions, captions != cases.PAD)), "text")
    torch.testing.assert_close(out.outputs["embeddings"]["text"], expected)


def test_bad_configuration_is_explained() -> None:
    with pytest.raises(KeyError, match="no encoder width"):
        ContrastiveHead(None, {"image": 6}, modalities=["image", "text"])
    with pytest.raises(ValueError, match="two modalities"):
        ContrastiveHead(None, {"image": 6})

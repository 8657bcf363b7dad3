"""ImagesAndTextHead (NLVR2): one fused pass per image through the head interface, on any single-stream model."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from polyfuse.batch import Batch, ModalityInput
from polyfuse.encoders import ViTEncoder
from polyfuse.fusion import EarlyFusion
from polyfuse.heads import ImagesAndTextHead
from polyfuse.models import MultimodalModel

from . import head_cases as cases


def nlvr2_model() -> MultimodalModel:
    """text + two images (each its own small ViT) -> EarlyFusion over all three -> the NLVR2 head."""
    modules = cases.encoders()
    modules["image_2"] = ViTEncoder(image_size=8, patch_size=4, dim=16, depth=1, heads=2, mlp_ratio=2.0)
    fusion = partial(EarlyFusion, depth=1, heads=2, dropout=0.0)
    return MultimodalModel(modules, fusion, partial(ImagesAndTextHead, num_labels=2), fusion_dim=16)


def nlvr2_batch(size: int = 4, seed: int = 0, present_2: torch.Tensor | None = None) -> Batch:
    base = cases.batch(size, seed)
    image_2 = ModalityInput(torch.randn(size, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 5)),
                            present=present_2)
    return Batch({**base.inputs, "image_2": image_2}, {"label": torch.arange(size) % 2}, base.ids)


def test_each_image_is_fused_with_the_text_and_every_parameter_trains():
    model = nlvr2_model()
    batch = nlvr2_batch()
    out = model(batch)
    assert out.outputs["logits"].shape == (4, 2) and out.outputs["pooled"].shape == (4, 32)
    # the first half of the pooled output is the (text, image) pass alone: image_2 does not reach it
    alone = model.fusion({"text": out.encoded["text"], "image": out.encoded["image"]}).pooled
    torch.testing.assert_close(out.outputs["pooled"][:, :16], alone)
    loss = model.head.loss(out.outputs, batch)
    metrics = model.head.make_metrics()
    model.head.update_metrics(metrics, out.outputs, batch)
    assert 0.0 <= metrics["acc"].compute().item() <= 1.0
    cases.assert_all_parameters_get_gradients(model, loss, ignore=("missing", "fusion.out"))


def test_an_absent_second_image_is_masked_in_its_own_pass():
    model = nlvr2_model().eval()
    absent = torch.tensor([True, False, True, True])
    first = model(nlvr2_batch(present_2=absent)).outputs["pooled"]
    other = nlvr2_batch(present_2=absent)
    other.inputs["image_2"].values[1] = 100.0   # garbage in the absent image changes nothing
    second = model(other).outputs["pooled"]
    torch.testing.assert_close(first, second)
    assert torch.isfinite(first).all()


def test_missing_pieces_are_named():
    with pytest.raises(KeyError, match="image_2"):
        ImagesAndTextHead(16, {"text": 16, "image": 16}, num_labels=2)
    with pytest.raises(ValueError, match="num_labels or labels"):
        ImagesAndTextHead(16, {"text": 16, "image": 16, "image_2": 16})
    model = nlvr2_model()
    batch = nlvr2_batch()
    with pytest.raises(KeyError, match=r"batch.targets\['label'\]"):
        model.head.loss(model(batch).outputs, Batch(batch.inputs, {}, batch.ids))

"""retrieval_recall and RetrievalRecall: hand-computed one-to-one and one-to-many cases."""

from __future__ import annotations

import pytest
import torch

from polyfuse.metrics import RetrievalRecall, content_key, retrieval_recall


def test_one_to_one_by_hand() -> None:
    # a0 ranks b0 first; a1 ranks b1 second (b0 above); a2 ranks b2 third.
    sim = torch.tensor([[0.9, 0.1, 0.2],
                        [0.8, 0.5, 0.1],
                        [0.7, 0.6, 0.3]])
    out = retrieval_recall(sim, ks=(1, 2))
    assert out["a_to_b/R@1"] == pytest.approx(100 / 3)
    assert out["a_to_b/R@2"] == pytest.approx(200 / 3)
    assert out["a_to_b/mean_rank"] == pytest.approx(2.0)
    assert out["a_to_b/median_rank"] == 2.0
    # b0's best a is a0 (rank 1); b1: a2=0.6 > a1=0.5 (rank 2); b2: a2=0.3 > a0=0.2 > a1=0.1 (rank 1)
    assert out["b_to_a/R@1"] == pytest.approx(200 / 3)
    assert out["b_to_a/R@2"] == pytest.approx(100.0)
    assert out["rsum"] == pytest.approx(100 / 3 + 200 / 3 + 200 / 3 + 100)


def test_one_to_many_coco_style_by_hand() -> None:
    """2 images (a), 4 captions (b): captions 0, 1 belong to image 0, captions 2, 3 to image 1."""
    owner = torch.tensor([0, 0, 1, 1])
    sim = torch.tensor([[0.2, 0.9, 0.8, 0.1],    # image 0: its caption 1 is ranked first -> hit at 1
                        [0.7, 0.6, 0.5, 0.4]])   # image 1: best own caption (2, 0.5) is 3rd -> rank 3
    out = retrieval_recall(sim, ks=(1, 2, 3), query_to_target=owner)
    assert out["a_to_b/R@1"] == 50.0 and out["a_to_b/R@2"] == 50.0 and out["a_to_b/R@3"] == 100.0
    assert out["a_to_b/mean_rank"] == pytest.approx(2.0)
    # captions -> images: c0: img1 0.7 > img0 0.2 (miss@1); c1: img0 (hit);
    # c2: img0 0.8 > 0.5 (miss); c3: img0 0.1 < 0.4 (hit)
    assert out["b_to_a/R@1"] == 50.0 and out["b_to_a/R@2"] == 100.0
    assert out["b_to_a/median_rank"] == 1.0  # floor(median([1, 0, 1, 0])) + 1
    assert out["b_to_a/mean_rank"] == pytest.approx(1.5)


def test_ties_count_against_the_query() -> None:
    out = retrieval_recall(torch.ones(4, 4), ks=(1,))
    assert out["a_to_b/R@1"] == 0.0 and out["b_to_a/R@1"] == 0.0


def test_input_errors_are_explained() -> None:
    with pytest.raises(ValueError, match="square"):
        retrieval_recall(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="one entry per b"):
        retrieval_recall(torch.zeros(2, 3), query_to_target=[0, 1])
    with pytest.raises(ValueError, match="no matching b"):
        retrieval_recall(torch.zeros(3, 2), query_to_target=[0, 1])


def test_content_key_respects_the_mask() -> None:
    ids = torch.tensor([[2, 5, 6, 3, 0], [2, 5, 6, 3, 9], [2, 5, 7, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    keys = content_key(ids, mask)
    assert keys[0] == keys[1] and keys[0] != keys[2]


def test_metric_dedupes_identical_texts_into_one_to_many() -> None:
    torch.manual_seed(0)
    images = torch.randn(6, 8)
    captions = torch.randn(3, 8)
    caption_of_image = torch.tensor([0, 1, 0, 2, 1, 0])
    texts = captions[caption_of_image]
    keys = caption_of_image * 7 + 1  # any injective key
    metric = RetrievalRecall([("image", "text")], ks=(1, 2), dedupe=["text"])
    metric.update({"image": images[:4], "text": texts[:4]}, keys={"text": keys[:4]})
    metric.update({"image": images[4:], "text": texts[4:]}, keys={"text": keys[4:]})
    out = metric.compute()
    sim = torch.nn.functional.normalize(captions, dim=-1) @ torch.nn.functional.normalize(images, dim=-1).T
    expected = retrieval_recall(sim, ks=(1, 2), query_to_target=caption_of_image)
    assert out["text_to_image/R@1"] == pytest.approx(expected["a_to_b/R@1"])
    assert out["image_to_text/R@2"] == pytest.approx(expected["b_to_a/R@2"])
    assert out["rsum"] == pytest.approx(expected["rsum"])
    assert out["image_text/rsum"] == pytest.approx(expected["rsum"])


def test_metric_skips_pairs_with_an_absent_side() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    present = torch.tensor([True, False, True, True, True])
    metric = RetrievalRecall([("audio", "image")], ks=(1,))
    metric.update({"audio": a, "image": b}, present={"audio": present})
    norm = torch.nn.functional.normalize
    expected = retrieval_recall(norm(a[present], dim=-1) @ norm(b[present], dim=-1).T, ks=(1,))
    assert metric.compute()["audio_to_image/R@1"] == pytest.approx(expected["a_to_b/R@1"])
    metric.reset()
    assert metric.compute() == {}

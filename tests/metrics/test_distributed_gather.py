"""Split-level metrics do not depend on how a split was sharded: gathering by sample id
(metrics/distributed.py) and RetrievalRecall's ``ids``. The 2-process check over every datamodule
path is tests/distributed/test_distributed_eval.py."""

from __future__ import annotations

import pytest
import torch

from polyfuse.metrics import RetrievalRecall
from polyfuse.metrics import distributed as gather


def split(seed: int = 0, count: int = 9):
    """Images of 3 contents (one-to-many), captions whose embedding also depends on the image."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(3, 8, generator=generator)[torch.arange(count) % 3]
    text = image + 0.8 * torch.randn(count, 8, generator=generator)
    keys = torch.arange(count) % 3
    return [f"s{i}" for i in range(count)], image, text, keys


def recall(order: list[int], with_ids: bool) -> dict[str, float]:
    ids, image, text, keys = split()
    metric = RetrievalRecall([("image", "text")], ks=(1, 2), dedupe=["image"])
    for start in range(0, len(order), 4):  # a few "batches" in the given order
        index = torch.tensor(order[start:start + 4])
        metric.update({"image": image[index], "text": text[index]}, None, {"image": keys[index]},
                      ids=[ids[i] for i in index] if with_ids else None)
    return metric.compute()


def test_retrieval_with_ids_is_independent_of_order_and_duplicates():
    forward = list(range(9))
    shuffled = [4, 7, 1, 0, 8, 2, 6, 3, 5]
    padded = shuffled + [4, 7]   # a padded sampler hands two samples out twice
    reference = recall(forward, with_ids=True)
    assert recall(shuffled, with_ids=True) == pytest.approx(reference)
    assert recall(padded, with_ids=True) == pytest.approx(reference)
    assert recall(padded, with_ids=False) != pytest.approx(reference)   # without ids the padding counts


def test_missing_ids_in_some_updates_is_an_error():
    ids, image, text, keys = split()
    metric = RetrievalRecall([("image", "text")], ks=(1,))
    metric.update({"image": image[:4], "text": text[:4]}, ids=ids[:4])
    metric.update({"image": image[4:], "text": text[4:]})
    with pytest.raises(ValueError, match="pass ids in every update"):
        metric.compute()


def test_gather_by_id_merges_ranks_once_in_id_order(monkeypatch):
    ranks = [{"10": "a", "2": "b"}, {"1": "c", "2": "b-again"}]
    monkeypatch.setattr(gather, "gather_from_ranks", lambda local: ranks)
    merged = gather.gather_by_id({})
    assert list(merged) == ["1", "2", "10"]                 # numeric ids sort as numbers
    assert merged["2"] == "b"                               # a duplicate is kept once
    ranks[:] = [{"b:1": 1}, {"a:2": 2}]
    assert list(gather.gather_by_id({})) == ["a:2", "b:1"]

"""ITM ranking in the loop (metrics/itm_ranking.py through ITMHead) against
scripts/eval_vilt_itm_ranking.py on a tiny random ViLT, and the top-k candidate mode."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from polyfuse.batch import Encoded
from polyfuse.cli.config import repo_root
from polyfuse.metrics import retrieval_recall
from polyfuse.metrics.itm_ranking import ITMRanking
from polyfuse.models import ViLT
from polyfuse.training import AVDigitsDataModule

SCRIPT = repo_root() / "scripts" / "eval_vilt_itm_ranking.py"


def load_script():
    spec = importlib.util.spec_from_file_location("eval_vilt_itm_ranking", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_vilt() -> ViLT:
    torch.manual_seed(0)
    return ViLT(task="retrieval", vocab_size=128, max_text_length=32, dim=32, depth=1, heads=2, mlp_hidden=64,
                image_size=32, patch_size=8, in_chans=1, itm_ranking={"ks": [1, 5, 10], "chunk": 16}).eval()


def avdigits_batches(count: int = 2, batch_size: int = 24) -> list:
    datamodule = AVDigitsDataModule(repo_root() / "data" / "avdigits", modalities=["image", "text"],
                                    text_field="caption", batch_size=batch_size, augment=False, seed=0)
    batches = []
    for batch in datamodule.loader("test"):
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


def test_in_loop_ranking_matches_the_script():
    model = tiny_vilt()
    batches = avdigits_batches()
    metrics = model.head.make_metrics("test")
    assert "itm_ranking" in metrics and "itm_ranking" not in model.head.make_metrics("train")
    with torch.no_grad():
        for batch in batches:
            model.head.update_metrics(metrics, model(batch).outputs, batch)
        ours = metrics.compute()
        script = load_script()
        images, ids, text_mask, owner = script.collect(batches, max_images=10_000)
        scores = model.itm_scores(ids, text_mask, images, chunk=16)
    assert len(set(owner)) < len(owner)                          # shared captions: one-to-many
    recall = retrieval_recall(scores.T, query_to_target=owner)  # as the script: a = captions, b = images
    for k in (1, 5, 10):
        assert ours[f"IR@{k}"] == pytest.approx(recall[f"a_to_b/R@{k}"], abs=1e-6), k
        assert ours[f"TR@{k}"] == pytest.approx(recall[f"b_to_a/R@{k}"], abs=1e-6), k
    assert 0 < ours["TR@10"] < 100 or 0 < ours["IR@10"] < 100     # not a degenerate score


def random_split(count: int = 12, owners: int = 4, seed: int = 0):
    """Anchors (images) of ``owners`` distinct contents, one swap (caption) per sample, fixed embeddings."""
    generator = torch.Generator().manual_seed(seed)
    anchor = Encoded(torch.randn(owners, 3, 4, generator=generator)[torch.arange(count) % owners])
    swap = Encoded(torch.randn(count, 2, 4, generator=generator))
    anchor_keys = torch.arange(count) % owners
    swap_keys = torch.arange(count) + 100
    weights = torch.randn(4, generator=generator)

    def scorer(pairs: dict[str, Encoded]) -> torch.Tensor:  # a fixed "fusion": a bilinear score
        a, s = pairs["image"].tokens.mean(1), pairs["text"].tokens.mean(1)
        return (a * s * weights).sum(-1)

    return [str(i) for i in range(count)], anchor, swap, anchor_keys, swap_keys, scorer


def test_candidates_equal_full_ranking_when_k_covers_everything():
    ids, anchor, swap, anchor_keys, swap_keys, scorer = random_split()
    embedding = torch.randn(12, 8)
    full, topk = ITMRanking(ks=(1, 2)), ITMRanking(ks=(1, 2), candidates=12)
    full.update(ids, anchor, swap, anchor_keys, swap_keys, scorer)
    topk.update(ids, anchor, swap, anchor_keys, swap_keys, scorer, embedding, embedding)
    assert full.compute() == pytest.approx(topk.compute())


def test_candidates_outside_the_top_k_are_misses():
    ids, anchor, swap, anchor_keys, swap_keys, scorer = random_split()
    # the ITC embeddings put every caption's true image last: with k=1 nothing can be found
    anchor_embedding = torch.nn.functional.one_hot(anchor_keys, 12).float()
    swap_embedding = -anchor_embedding + 0.01
    metric = ITMRanking(ks=(1,), candidates=1)
    metric.update(ids, anchor, swap, anchor_keys, swap_keys, scorer, anchor_embedding, swap_embedding)
    scores = metric.compute()
    assert scores["TR@1"] == 0.0 and scores["IR@1"] == 0.0


def test_candidates_need_embeddings():
    ids, anchor, swap, anchor_keys, swap_keys, scorer = random_split()
    with pytest.raises(ValueError, match="anchor_embedding"):
        ITMRanking(candidates=2).update(ids, anchor, swap, anchor_keys, swap_keys, scorer)

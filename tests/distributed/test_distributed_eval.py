"""Exactly-once distributed evaluation for every datamodule path, with metrics equal to one process.

Two gloo processes (tests/distributed/disteval_worker.py) read the evaluation split of AV-digits, a
CSV export, a COCO export (two captions per image), a VQAv2 export and WebDataset shards through
``PolyfuseDataModule.loader`` with 3 samples per batch; no split size is a multiple of 2 x 3. A third
process reads the same splits alone. Every sample is scored exactly once across the two ranks, and
every metric -- classification accuracy / macro F1, zero-shot top-k, retrieval R@K with one-to-many
ground truth, ITM ranking (every pair and ITC top-3), VQA accuracy, caption scores -- equals the
single-process value to 1e-6.
"""

from __future__ import annotations

import json

import pytest

from . import disteval_worker as worker
from .harness import free_port, run_ranks

SIZES = {"avdigits": 269, "csv": 20, "coco": 40, "vqa": 65, "shards": 20}
WORLD_SIZE = 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """``({path: [rank 0 result, rank 1 result]}, {path: single-process result})``."""
    data = tmp_path_factory.mktemp("disteval_data")
    (data / "overrides.json").write_text(json.dumps(worker.write_datasets(data)))
    ddp, single = tmp_path_factory.mktemp("disteval_ddp"), tmp_path_factory.mktemp("disteval_single")
    port = free_port()
    ranks_args = [(data, ddp, rank, WORLD_SIZE, port) for rank in range(WORLD_SIZE)]
    run_ranks(worker, [*ranks_args, (data, single, 0, 1, 0)], timeout=300)
    ranks = {p: [json.loads((ddp / f"{p}.rank{r}.json").read_text()) for r in range(WORLD_SIZE)] for p in worker.PATHS}
    alone = {p: json.loads((single / f"{p}.rank0.json").read_text()) for p in worker.PATHS}
    return ranks, alone


@pytest.mark.slow
@pytest.mark.parametrize("path", worker.PATHS)
def test_every_sample_is_scored_exactly_once(runs, path: str):
    ranks, alone = runs
    seen = [sample for rank in ranks[path] for sample in rank["seen"]]
    assert len(alone[path]["seen"]) == SIZES[path] == len(set(alone[path]["seen"]))
    assert SIZES[path] % (WORLD_SIZE * worker.BATCH_SIZE)              # a ragged last batch somewhere
    assert len(seen) == len(set(seen)), "a sample was scored twice (padded sampler?)"
    assert sorted(seen) == sorted(alone[path]["seen"])
    assert all(rank["seen"] for rank in ranks[path])                   # both ranks took part


EXPECTED = {"avdigits": ["cls/acc", "cls/f1_macro", "zero_shot/top1", "zero_shot/top5", "retrieval/image_to_text/R@1",
                         "retrieval/text_to_image/R@5", "itm/TR@1", "itm/IR@5", "itm_top3/TR@5", "itm_top3/IR@1"],
            "csv": ["cls/acc", "retrieval/rsum", "itm/itm_rsum"],
            "coco": ["retrieval/image_to_text/R@1", "retrieval/text_to_image/R@1", "itm/TR@1", "itm_top3/IR@5"],
            "vqa": ["vqa_acc", "itm/TR@1", "itm/IR@1", "itm_top3/itm_rsum"],
            "shards": ["cls/acc", "cls/f1_macro", "retrieval/rsum", "itm/itm_rsum"]}


@pytest.mark.slow
@pytest.mark.parametrize("path", worker.PATHS)
def test_metrics_equal_single_process(runs, path: str):
    ranks, alone = runs
    reference = alone[path]["metrics"]
    assert set(EXPECTED[path]) <= set(reference)
    if path == "avdigits" and worker.Evaluation("avdigits").captions is not None:
        assert {"caption/CIDEr", "caption/BLEU-4"} <= set(reference)
    assert any(0 < value < 100 for key, value in reference.items() if "R@" in key)   # not degenerate
    for rank in ranks[path]:
        assert set(rank["metrics"]) == set(reference)
        for name, value in reference.items():
            assert rank["metrics"][name] == pytest.approx(value, abs=1e-6), name

"""Generated-answer metrics of MultimodalLM on 2 processes (gloo) equal one process over all answers:
the exact-match / VQA means are summed over ranks, caption predictions gathered by id."""

from __future__ import annotations

import pytest

from ..distributed.harness import worker_results
from . import mllm_eval_ddp_worker as worker


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return worker_results(worker, tmp_path_factory.mktemp("mllm_eval_ddp"), timeout=180)


@pytest.mark.slow
def test_two_ranks_score_as_one_process(ranks):
    single, seen = worker.score(worker.SAMPLES)
    # by hand, over the six answers: exact 1, 0, 1 | 1, 0 | 1; VQA: "three" among eight "2" and two "3"
    # scores 0.6, the caption (1 of 2 references, soft) 1/6
    assert single["answer_exact_match"] == pytest.approx(4 / 6)
    assert single["answer_vqa_acc"] == pytest.approx((1 + 0 + 1 + 1 + 0.6 + 1 / 6) / 6)
    assert single["answer_vqa_acc_both"] == pytest.approx((1 + 0.6) / 2)
    assert single["answer_CIDEr_caption"] == 1.0
    for result in ranks:
        assert result["values"] == pytest.approx(single)
        assert result["seen"] == seen   # each rank's scorer got every caption (rank 1 had none)

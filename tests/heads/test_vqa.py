"""VQAHead: answer vocabulary, soft scores (BUTD / min3 / exact), soft BCE, official accuracy metric."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from polyfuse.heads import AnswerVocabulary, VQAHead
from polyfuse.heads.vqa import answer_score, soft_scores
from polyfuse.losses import vqa_soft_bce
from polyfuse.metrics import vqa_accuracy

from . import head_cases as cases


def test_vocabulary_counts_normalised_answers_top_k() -> None:
    answers = [["two", "2", "2", "Yes"], ["yes", "no", "the dog", "dog"], ["cat"]]
    vocab = AnswerVocabulary.from_answers(answers, top_k=3)
    assert vocab.answers == ["2", "dog", "yes"]   # 3, 2, 2 (ties alphabetical), cat dropped by top_k
    assert AnswerVocabulary.from_answers(answers, min_count=2).answers == ["2", "dog", "yes"]


@pytest.mark.parametrize("count,butd,min3", [(0, 0.0, 0.0), (1, 0.3, 1 / 3), (2, 0.6, 2 / 3), (3, 0.9, 1.0), (5, 1.0, 1.0)])
def test_score_rules(count: int, butd: float, min3: float) -> None:
    assert answer_score(count, 10, "butd") == pytest.approx(butd)
    assert answer_score(count, 10, "min3") == pytest.approx(min3)
    assert answer_score(count, 10, "exact") == pytest.approx(butd)   # the leave-one-out mean, for 10 annotators
    # and the exact rule is the official accuracy of that answer
    official = vqa_accuracy(["red"], [["red"] * count + ["x"] * (10 - count)]) / 100
    assert answer_score(count, 10, "exact") == pytest.approx(official)


def test_soft_scores_ignore_out_of_vocabulary_answers() -> None:
    vocab = AnswerVocabulary(["2", "yes"])
    targets = soft_scores([["two", "2", "2", "maybe"], ["no"] * 10], vocab)
    torch.testing.assert_close(targets, torch.tensor([[0.9, 0.0], [0.0, 0.0]]))


def test_head_loss_metric_and_gradients() -> None:
    vocab = AnswerVocabulary(["0", "1", "yes", "no"])
    answers = [["yes"] * 10, ["one"] * 6 + ["1"] * 4, ["no"] * 2 + ["yes"] * 8, ["0"] * 10, ["no"] * 10, ["maybe"] * 10]
    model = cases.model(partial(VQAHead, vocabulary=vocab, dropout=0.0))
    batch = cases.batch(6, answers=answers)
    out = model(batch)
    assert out.outputs.shape == (6, 4)
    loss = model.head.loss(out.outputs, batch)
    torch.testing.assert_close(loss, vqa_soft_bce(out.outputs, soft_scores(answers, vocab)))
    metrics = model.head.make_metrics()
    model.head.update_metrics(metrics, out.outputs, batch)
    predictions = model.head.predict(out.outputs)
    expected = vqa_accuracy(predictions, answers, normalize_references=True)
    assert metrics.compute()["vqa_acc"].item() == pytest.approx(expected, rel=1e-5)
    # EarlyFusion's token output (fusion.out) feeds token-level heads only
    cases.assert_all_parameters_get_gradients(model, loss, ignore=("missing", "fusion.out"))


def test_missing_answers_are_explained() -> None:
    model = cases.model(partial(VQAHead, vocabulary=["yes"]))
    batch = cases.batch(2)
    with pytest.raises(KeyError, match="answers"):
        model.head.loss(model(batch).outputs, batch)

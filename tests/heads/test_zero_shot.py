"""Zero-shot classification pieces: prompt ensembling, top-k accuracy, ZeroShotHead's class-embedding cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from polyfuse.batch import Batch, Encoded, ModalityInput
from polyfuse.heads import ZeroShotHead
from polyfuse.heads.base import HeadContext
from polyfuse.heads.zero_shot import class_embeddings, prompts, topk_accuracy, zero_shot_logits


def test_class_embeddings_average_normalised_prompt_embeddings():
    table = {"a cat": torch.tensor([3.0, 0.0]), "the cat": torch.tensor([0.0, 1.0]),
             "a dog": torch.tensor([0.0, -2.0]), "the dog": torch.tensor([0.0, -5.0])}
    classes = class_embeddings(lambda texts: torch.stack([table[t] for t in texts]), ["cat", "dog"],
                               ["a {}", lambda name: f"the {name}"])
    expected_cat = F.normalize(torch.tensor([1.0, 1.0]), dim=0)  # mean of unit vectors, normalised again
    assert torch.allclose(classes, torch.stack([expected_cat, torch.tensor([0.0, -1.0])]))
    assert prompts("cat", ["a {}.", str.upper]) == ["a cat.", "CAT"]
    with pytest.raises(ValueError, match="templates"):
        class_embeddings(lambda texts: torch.zeros(len(texts), 2), ["cat"], [])


def test_topk_accuracy_and_logits():
    logits = zero_shot_logits(torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.1]]), torch.eye(2), scale=10.0)
    assert torch.allclose(logits[0], torch.tensor([10.0, 0.0]))
    labels = torch.tensor([0, 0, 0])
    assert topk_accuracy(logits, labels, (1, 2)) == pytest.approx({"top1": 100 / 3, "top2": 100.0})


def test_head_caches_class_embeddings_only_while_evaluating():
    calls = []

    def encode_modality(modality: str, inputs: ModalityInput) -> Encoded:
        calls.append(inputs.values.shape[0])
        return Encoded(F.one_hot(inputs.values[:, :1] % 3, 3).float())  # (N, 1, 3)

    def tokenizer(texts: list[str]) -> ModalityInput:
        ids = torch.tensor([[len(t)] for t in texts])
        return ModalityInput(ids, torch.ones_like(ids, dtype=torch.bool))

    head = ZeroShotHead(dims={"image": 3, "text": 3}, class_names=["a", "bb", "ccc"], templates=["{}"],
                        tokenizer=tokenizer)
    images = Encoded(torch.eye(3)[:, None])
    context = HeadContext(encoded={"image": images}, encode_modality=encode_modality)
    batch = Batch({}, targets={"label": torch.tensor([2, 0, 1])})
    head.eval()
    with torch.no_grad():
        logits = head(None, batch, context)
        head(None, batch, context)
    assert len(calls) == 3  # one text batch per class, computed once for the evaluation
    assert logits.argmax(1).tolist() == [2, 0, 1] and head.loss(logits, batch).item() < 1e-3
    head.train()
    head(None, batch, context)
    assert len(calls) == 6
    with pytest.raises(ValueError, match="one width"):
        ZeroShotHead(dims={"image": 3, "text": 4}, class_names=["a"], templates=["{}"], tokenizer=tokenizer)

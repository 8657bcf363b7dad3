"""ITMHead's in-loop ranking through the whole model (model/head=itm, ALBEF-style top-k candidates
from the head's own ITC embeddings): the logged TR@K / IR@K equal ranking the same pairs by hand."""

from __future__ import annotations

import hydra
import pytest
import torch

from polyfuse.batch import Encoded
from polyfuse.metrics.retrieval import _ranks

OVERRIDES = ["model/head=itm", "model/fusion=early", "data.modalities=[image,text]", "data.text_field=caption",
             "~model.encoders.audio", "data.augment=false", "data.batch_size=16",
             "+model.head.ranking={ks: [1, 3], candidates: 4, chunk: 8}"]


def test_top_k_ranking_through_the_model(compose_train):
    cfg = compose_train(OVERRIDES)
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model).eval()
    datamodule = hydra.utils.instantiate(cfg.data)
    head = module.model.head
    metrics = head.make_metrics("val")
    assert "itm_ranking" not in head.make_metrics("train")
    batches = []
    with torch.no_grad():
        for batch in datamodule.loader("val"):
            output = module.model(batch)
            head.update_metrics(metrics, output.outputs, batch)
            batches.append((batch, output))
            if len(batches) == 2:
                break
        scores = metrics.compute()
        # by hand: unique images / captions by content, ITC top 4 per query, ITM logits of those pairs
        ranking = metrics["itm_ranking"]
        samples = list(ranking.samples.values())
        image_keys = torch.stack([s["keys"][0] for s in samples])
        text_keys = torch.stack([s["keys"][1] for s in samples])
        images, image_of = torch.unique(image_keys, return_inverse=True)
        texts, text_of = torch.unique(text_keys, return_inverse=True)
        first = lambda owner, n: [int((owner == i).nonzero()[0]) for i in range(n)]  # noqa: E731
        image_rows, text_rows = first(image_of, len(images)), first(text_of, len(texts))
        norm = torch.nn.functional.normalize
        similarity = (norm(torch.stack([samples[i]["anchor_embedding"] for i in image_rows]), dim=-1)
                      @ norm(torch.stack([samples[i]["swap_embedding"] for i in text_rows]), dim=-1).T)

        def itm(i: int, t: int) -> float:
            pair = {"image": Encoded(samples[image_rows[i]]["anchor"][None]),
                    "text": Encoded(samples[text_rows[t]]["swap"][None])}
            return float(head.classifier(module.model.fusion(pair).pooled).squeeze())

        tr = torch.full(similarity.shape, float("-inf"), dtype=torch.float64)
        for i in range(len(images)):
            for t in similarity[i].topk(4).indices.tolist():
                tr[i, t] = itm(i, t)
        ir = torch.full(similarity.T.shape, float("-inf"), dtype=torch.float64)
        for t in range(len(texts)):
            for i in similarity[:, t].topk(4).indices.tolist():
                ir[t, i] = itm(i, t)
    positive = torch.zeros(len(images), len(texts), dtype=torch.bool)
    positive[image_of, text_of] = True
    assert len(texts) < len(samples)                                   # shared captions: one-to-many
    for k in (1, 3):
        assert scores[f"TR@{k}"] == pytest.approx(100 * (_ranks(tr, positive) < k).double().mean().item(), abs=1e-9)
        assert scores[f"IR@{k}"] == pytest.approx(100 * (_ranks(ir, positive.T) < k).double().mean().item(), abs=1e-9)

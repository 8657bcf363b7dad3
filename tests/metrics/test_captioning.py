"""caption_scores equals calling pycocoevalcap directly (PTB tokenizer + scorers); needs Java."""

from __future__ import annotations

import shutil

import pytest

from polyfuse.metrics import CaptionScores, caption_scores
from polyfuse.metrics import captioning as captioning_module

pycocoevalcap = pytest.importorskip("pycocoevalcap")
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs Java")

REFERENCES = {
    "1": ["A man is riding a horse on the beach.", "A person rides a brown horse near the sea."],
    "2": ["Two dogs play with a red ball.", "A pair of dogs playing with a ball in the grass."],
    "3": ["A plate of food with broccoli and rice.", "Broccoli, rice and chicken on a white plate."],
}
PREDICTIONS = {"1": "a man riding a horse on a beach", "2": "two dogs playing with a ball",
               "3": "a plate of rice and broccoli"}


def _direct() -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tokenizer.tokenize({k: [{"caption": v}] for k, v in PREDICTIONS.items()})
    bleu, _ = Bleu(4).compute_score(gts, res)
    return {"BLEU-1": bleu[0], "BLEU-2": bleu[1], "BLEU-3": bleu[2], "BLEU-4": bleu[3],
            "METEOR": Meteor().compute_score(gts, res)[0], "ROUGE-L": Rouge().compute_score(gts, res)[0],
            "CIDEr": Cider().compute_score(gts, res)[0]}


@needs_java
@pytest.mark.slow
def test_equals_pycocoevalcap_directly() -> None:
    ours = caption_scores(PREDICTIONS, REFERENCES, percent=False)
    reference = _direct()
    assert set(ours) == set(reference)
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name
    percent = caption_scores(PREDICTIONS, REFERENCES, metrics=("CIDEr", "BLEU-4"))
    assert percent["CIDEr"] == pytest.approx(100 * reference["CIDEr"])
    assert set(percent) == {"CIDEr", "BLEU-4"}


@needs_java
@pytest.mark.slow
def test_metric_collects_over_batches() -> None:
    metric = CaptionScores(metrics=("BLEU-4", "CIDEr", "ROUGE-L"))
    ids = list(PREDICTIONS)
    metric.update(ids[:2], [PREDICTIONS[i] for i in ids[:2]], [REFERENCES[i] for i in ids[:2]])
    metric.update(ids[2:], [PREDICTIONS[i] for i in ids[2:]], [REFERENCES[i] for i in ids[2:]])
    expected = caption_scores(PREDICTIONS, REFERENCES, metrics=("BLEU-4", "CIDEr", "ROUGE-L"))
    assert metric.compute() == pytest.approx(expected)
    metric.reset()
    assert metric.compute() == {}


def test_missing_java_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(captioning_module.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="need Java"):
        caption_scores(PREDICTIONS, REFERENCES)


def test_mismatched_ids_are_reported() -> None:
    with pytest.raises(ValueError, match="same ids"):
        caption_scores({"1": "a"}, {"2": ["b"]})


@needs_java
def test_spice_without_stanford_models_is_a_clear_error() -> None:
    from pathlib import Path

    from pycocoevalcap.spice import spice as spice_module

    if (Path(spice_module.__file__).parent / "lib" / "stanford-corenlp-3.6.0.jar").is_file():
        pytest.skip("the Stanford CoreNLP models are installed here")
    with pytest.raises(RuntimeError, match="Stanford CoreNLP"):
        caption_scores(PREDICTIONS, REFERENCES, spice=True)

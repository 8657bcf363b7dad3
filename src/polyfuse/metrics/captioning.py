"""Caption metrics through pycocoevalcap (the COCO caption evaluation), PTB tokenizer included."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import torch.distributed as dist

from polyfuse._optional import import_optional
from polyfuse.metrics.collected import SplitMetric

__all__ = ["caption_scores", "CaptionScores", "CAPTION_METRICS"]

CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def _require_tools(spice: bool) -> None:
    import_optional("pycocoevalcap", extra="captioning", feature="caption metrics")
    if shutil.which("java") is None:
        raise RuntimeError("caption metrics need Java: pycocoevalcap's PTB tokenizer and METEOR run as Java "
                           "programs, and `java` is not on PATH (install a JRE, e.g. "
                           "`apt-get install default-jre-headless`)")
    if spice:
        from pycocoevalcap.spice import spice as spice_module

        lib = Path(spice_module.__file__).parent / "lib"
        if not (lib / "stanford-corenlp-3.6.0.jar").is_file():
            raise RuntimeError(f"SPICE needs the Stanford CoreNLP 3.6.0 jars in {lib} (pycocoevalcap downloads "
                               "them from nlp.stanford.edu on first use; run "
                               "`python -m pycocoevalcap.spice.get_stanford_models` where the network allows)")


def caption_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], *,
                   metrics: Sequence[str] = CAPTION_METRICS, spice: bool = False,
                   percent: bool = True) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (and SPICE) as the COCO caption evaluation computes them.

    Both sides go through pycocoevalcap's PTB tokenizer (Stanford CoreNLP, lower-cased, punctuation
    removed), then its scorers: ``Bleu(4)``, ``Meteor`` (1.5), ``Rouge`` (ROUGE-L), ``Cider`` (which is
    CIDEr-D: clipped counts, Gaussian length penalty, x10) and optionally ``Spice``. CIDEr's document
    frequencies come from the references passed in, so score the whole split at once.

    Args:
        predictions: sample id -> generated caption. references: sample id -> reference captions
            (same ids).
        metrics: which of ``CAPTION_METRICS`` to compute (METEOR costs a JVM start).
        spice: also compute SPICE (needs the Stanford CoreNLP models, see :func:`_require_tools`).
        percent: multiply by 100, as papers report (``CIDEr 117.2``); ``False`` gives pycocoevalcap's
            own scale (``1.172``).

    Raises:
        RuntimeError: Java (or the SPICE models) missing. ImportError: pycocoevalcap missing.
    """
    unknown = [m for m in metrics if m not in CAPTION_METRICS]
    if unknown:
        raise ValueError(f"unknown caption metrics {unknown}; valid: {', '.join(CAPTION_METRICS)}")
    if set(predictions) != set(references):
        missing = sorted(set(references) - set(predictions))[:5]
        extra = sorted(set(predictions) - set(references))[:5]
        raise ValueError(f"predictions and references must have the same ids (missing {missing}, extra {extra})")
    if not predictions:
        raise ValueError("caption_scores needs at least one caption")
    empty = [key for key, refs in references.items() if not refs]
    if empty:
        raise ValueError(f"samples without reference captions: {empty[:5]}")
    _require_tools(spice)
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ids = list(references)
    with contextlib.redirect_stdout(io.StringIO()):
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({i: [{"caption": c} for c in references[i]] for i in ids})
        res = tokenizer.tokenize({i: [{"caption": predictions[i]}] for i in ids})
        scores: dict[str, float] = {}
        if any(m.startswith("BLEU") for m in metrics):
            bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
            scores.update({f"BLEU-{n + 1}": float(bleu[n]) for n in range(4)})
        if "METEOR" in metrics:
            meteor = Meteor()
            try:
                scores["METEOR"] = float(meteor.compute_score(gts, res)[0])
            finally:
                del meteor  # closes the JVM
        if "ROUGE-L" in metrics:
            scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
        if "CIDEr" in metrics:
            scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
        if spice:
            from pycocoevalcap.spice.spice import Spice

            scores["SPICE"] = float(Spice().compute_score(gts, res)[0])
    scale = 100.0 if percent else 1.0
    keep = set(metrics) | ({"SPICE"} if spice else set())
    return {name: scale * value for name, value in scores.items() if name in keep}


class CaptionScores(SplitMetric):
    """Collects generated and reference captions over a split and scores them with :func:`caption_scores`.

    ``update(ids, predictions, references)``; the strings live in Python lists (not tensor states)
    and are gathered across processes with ``all_gather_object`` in :meth:`compute`. Returns ``{}``
    when nothing was collected (e.g. during training, where heads skip generation).
    """

    higher_is_better = True

    def __init__(self, metrics: Sequence[str] = CAPTION_METRICS, spice: bool = False, percent: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.metric_names, self.spice, self.percent = tuple(metrics), spice, percent
        self.predictions: dict[str, str] = {}
        self.references: dict[str, list[str]] = {}

    def update(self, ids: Sequence[str], predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        if not len(ids) == len(predictions) == len(references):
            raise ValueError(f"got {len(ids)} ids, {len(predictions)} predictions, {len(references)} reference lists")
        for key, prediction, refs in zip(ids, predictions, references):
            self.predictions[str(key)] = prediction
            self.references[str(key)] = [refs] if isinstance(refs, str) else list(refs)

    def reset(self) -> None:
        super().reset()
        self.predictions, self.references = {}, {}

    def compute(self) -> dict[str, float]:
        predictions, references = dict(self.predictions), dict(self.references)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (predictions, references))
            for other_predictions, other_references in gathered:
                predictions.update(other_predictions)
                references.update(other_references)
        if not predictions:
            return {}
        return caption_scores(predictions, references, metrics=self.metric_names, spice=self.spice,
                              percent=self.percent)

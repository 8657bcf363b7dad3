"""Two ranks (gloo, CPU) score generated MultimodalLM answers with LanguageModelingHead's metrics; run by
test_multimodal_lm_eval_ddp.py.

Usage: ``python -m tests.models.mllm_eval_ddp_worker OUT_DIR``; writes ``OUT_DIR/results.pt``: per rank, the
computed metrics and what the caption scorer saw.
"""

from __future__ import annotations

import os
import sys

import torch

from polyfuse.batch import Batch
from polyfuse.metrics import captioning
from polyfuse.models.lm_head import LanguageModelingHead, LMOutput
from tests.distributed.harness import spawn_gloo

WORLD_SIZE = 2
VQA_ANSWERS = ["two", "2", "2", "three", "two", "two", "2", "two", "three", "two"]
#: per sample: (id, [(generated, reference, all references, type)]), one sample per rank and one more on rank 0
SAMPLES = [
    ("a", [("seven", "seven", ["seven"], "written"), ("eight", "seven", ["seven"], "spoken"),
           ("no", "no", ["no"], "both")]),
    ("b", [("two", "two", ["two"], "written"), ("three", "two", VQA_ANSWERS, "both")]),
    ("c", [("a thin seven", "a thin seven", ["a thin seven", "a wide seven"], "caption")]),
]
TYPES = ["written", "spoken", "both"]


def head() -> LanguageModelingHead:
    return LanguageModelingHead(exact_match=True, question_types=TYPES, caption_types=["caption"])


def outputs(samples) -> tuple[LMOutput, Batch]:
    """The head's input for ``samples`` (generation mocked: the answers are given)."""
    rows = [(b, k, answer) for b, (_, answers) in enumerate(samples) for k, answer in enumerate(answers)]
    out = LMOutput(torch.zeros(len(samples), 1, 1), generated=[a[0] for _, _, a in rows],
                   references=[a[1] for _, _, a in rows], reference_types=[a[3] for _, _, a in rows],
                   reference_answers=[a[2] for _, _, a in rows], generated_from=[(b, k) for b, k, _ in rows])
    return out, Batch(inputs={}, ids=[name for name, _ in samples])


def fake_caption_scores(predictions, references, **options):
    """Stands in for pycocoevalcap: how many captions it was given, and which."""
    fake_caption_scores.seen = (dict(predictions), dict(references))
    return {"CIDEr": float(len(predictions))}


def score(samples) -> tuple[dict[str, float], tuple]:
    """``LanguageModelingHead`` metrics over ``samples`` in this process (and the caption scorer's input)."""
    real, captioning.caption_scores = captioning.caption_scores, fake_caption_scores
    try:
        metrics = head().make_metrics("test")
        head().update_metrics(metrics, *outputs(samples))
        values = {name: float(value) for name, value in metrics.compute().items()
                  if name.startswith("answer_") and not name.startswith("answer_token_acc")}  # no labels: no token acc
    finally:
        captioning.caption_scores = real
    return values, fake_caption_scores.seen


def run(rank: int, out_dir: str) -> None:
    mine = [SAMPLES[0], SAMPLES[2]] if rank == 0 else [SAMPLES[1]]
    values, seen = score(mine)
    torch.save({"values": values, "seen": seen}, os.path.join(out_dir, f"rank{rank}.pt"))


if __name__ == "__main__":
    spawn_gloo(run, WORLD_SIZE, sys.argv[1])
    paths = [os.path.join(sys.argv[1], f"rank{rank}.pt") for rank in range(WORLD_SIZE)]
    torch.save([torch.load(path, weights_only=False) for path in paths], os.path.join(sys.argv[1], "results.pt"))

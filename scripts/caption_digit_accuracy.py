"""How often a trained AV-digits captioning run names the written digit right, clean or with a modality missing.

    .venv/bin/python scripts/caption_digit_accuracy.py outputs/captioning/runs/<time> [--missing image]

AV-digits captions follow one template ("a wide handwritten seven with thin strokes , ..."), so the
digit a caption names is its first class word (``info.json``'s ``classes``). The score is the share of
generated captions whose digit word equals the reference caption's: the number comparable to a
multimodal LM's answer to "what digit is shown ?" (``answer_token_acc_written`` /
``answer_exact_match_written``, docs/multimodal_lm.md). ``--missing m`` marks ``m`` absent for every
sample (:func:`polyfuse.robustness.drop_modalities`, as ``polyfuse-eval``'s missing-modality suite at
rate 1). Prints one JSON line: ``{"digit_acc", "samples", "missing", "split"}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from polyfuse.cli.config import register_resolvers
from polyfuse.cli.eval import evaluation_batches
from polyfuse.reporting.runs import load_model
from polyfuse.robustness.evaluate import with_encodings
from polyfuse.robustness.missing import drop_modalities


def digit_word(caption: str, classes: list[str]) -> str | None:
    """The first word of ``caption`` that is a class name (``None``: the caption names no digit)."""
    return next((word for word in caption.split() if word in classes), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--split", default="test")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--missing", nargs="*", default=[], help="modalities absent for every sample")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-batches", type=int, default=None, help="the first N batches only (quick checks)")
    args = parser.parse_args()
    register_resolvers()
    module, cfg = load_model(args.run_dir, args.checkpoint)
    model = module.model
    classes = json.loads((Path(cfg.data.root) / "info.json").read_text())["classes"]
    batches, _ = evaluation_batches(cfg, args.split, args.batch_size, args.max_batches)
    right = total = 0
    with torch.no_grad():
        for batch in batches:
            encoded = model.encode(batch)
            if args.missing:
                encoded = drop_modalities(encoded, args.missing, torch.ones(batch.batch_size, dtype=torch.bool))
            with with_encodings(model, encoded):
                generated = model(batch).outputs["generated"]
            references = batch.extras[model.head.references]
            for caption, reference in zip(generated, references):
                reference = reference if isinstance(reference, str) else reference[0]
                right += int(digit_word(caption, classes) == digit_word(reference, classes))
                total += 1
    print(json.dumps({"digit_acc": right / max(total, 1), "samples": total, "missing": args.missing,
                      "split": args.split}))


if __name__ == "__main__":
    main()

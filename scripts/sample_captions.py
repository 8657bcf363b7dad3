"""Print captions a trained captioning run generates, next to the reference captions.

    .venv/bin/python scripts/sample_captions.py outputs/tasks/captioning --samples 0 40 80 120 --markdown

Rebuilds the run from its ``config.yaml`` and best checkpoint (``polyfuse.reporting.runs.load_model``),
reads the chosen samples of ``--split`` with the run's own data pipeline, and decodes with the head's
beam search settings (the same generation ``polyfuse-train``'s test step scores with CIDEr).
"""

from __future__ import annotations

import argparse

import torch

from polyfuse.cli.config import register_resolvers
from polyfuse.cli.eval import evaluation_loader
from polyfuse.reporting.runs import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--split", default="test")
    parser.add_argument("--samples", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    register_resolvers()
    module, cfg = load_model(args.run_dir, args.checkpoint)
    loader = evaluation_loader(cfg, args.split, len(args.samples))
    dataset = loader.dataset
    bad = [i for i in args.samples if not 0 <= i < len(dataset)]
    if bad:
        raise SystemExit(f"samples {bad} are outside split {args.split!r} (0..{len(dataset) - 1})")
    batch = loader.collate_fn([dataset[i] for i in args.samples])
    with torch.no_grad():
        outputs = module(batch).outputs
    if not isinstance(outputs, dict) or outputs.get("generated") is None:
        raise SystemExit(f"{args.run_dir}: the head of this run generates no captions in evaluation")
    head = module.model.head
    references = batch.extras.get(getattr(head, "references", "caption"))
    if args.markdown:
        print("| sample | generated | reference |\n|---|---|---|")
    for position, index in enumerate(args.samples):
        reference = references[position] if references is not None else "?"
        reference = reference[0] if isinstance(reference, (list, tuple)) else reference
        if args.markdown:
            print(f"| {batch.ids[position]} | {outputs['generated'][position]} | {reference} |")
        else:
            print(f"{batch.ids[position]}: {outputs['generated'][position]!r}  (reference: {reference!r})")


if __name__ == "__main__":
    main()

"""Image-text retrieval by ITM ranking for a trained ViLT retrieval run (the ViLT paper's TR@K / IR@K).

Every image of the split is fused with every distinct caption and scored by the ITM head
(:meth:`polyfuse.models.ViLT.itm_scores`); captions shared by several images are one target
(one-to-many ground truth, as AV-digits and COCO's per-image caption sets). Text -> image is
``IR@K``, image -> text ``TR@K`` (:func:`polyfuse.metrics.retrieval_recall`).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/eval_vilt_itm_ranking.py outputs/vilt_retrieval_avdigits/runs/<time>
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from polyfuse.cli.eval import evaluation_batches
from polyfuse.metrics import retrieval_recall
from polyfuse.reporting.runs import load_model


def collect(batches: list, max_images: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Images ``(N, C, H, W)``, distinct captions ``(T, L)`` + mask, and each image's caption index."""
    images, captions, owner = [], {}, []
    for batch in batches:
        text = batch.inputs["text"]
        mask = text.mask if text.mask is not None else torch.ones_like(text.values, dtype=torch.bool)
        for row in range(text.values.shape[0]):
            if len(images) == max_images:
                break
            key = tuple(text.values[row][mask[row]].tolist())
            owner.append(captions.setdefault(key, len(captions)))
            images.append(batch.inputs["image"].values[row])
    length = max(len(key) for key in captions)
    ids = torch.zeros(len(captions), length, dtype=torch.long)
    text_mask = torch.zeros(len(captions), length, dtype=torch.bool)
    for key, index in captions.items():
        ids[index, :len(key)] = torch.tensor(key)
        text_mask[index, :len(key)] = True
    return torch.stack(images), ids, text_mask, owner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-images", type=int, default=500)
    parser.add_argument("--chunk", type=int, default=256)
    args = parser.parse_args()
    module, run_cfg = load_model(args.run_dir, args.checkpoint)
    model = module.model.eval()
    batches, _ = evaluation_batches(run_cfg, args.split, 256)
    images, ids, text_mask, owner = collect(batches, args.max_images)
    scores = model.itm_scores(ids, text_mask, images, chunk=args.chunk)  # (images, captions)
    recall = retrieval_recall(scores.T, query_to_target=owner)  # a = captions, b = images
    result = {"run": str(args.run_dir), "split": args.split, "images": images.shape[0], "captions": ids.shape[0],
              **{f"IR@{k}": recall[f"a_to_b/R@{k}"] for k in (1, 5, 10)},
              **{f"TR@{k}": recall[f"b_to_a/R@{k}"] for k in (1, 5, 10)}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

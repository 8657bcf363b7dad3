"""``polyfuse-explain interactions``: redundancy, uniqueness and synergy of two modalities for a label.

Examples::

    polyfuse-explain interactions outputs/train/runs/<time>                       # 2-modality run
    polyfuse-explain interactions <run> --modalities image audio --split test
    polyfuse-explain interactions <fused run> --unimodal image=<image-only run> audio=<audio-only run>
    polyfuse-explain interactions <run> --target prediction    # what the fused model's predictions carry
    polyfuse-explain interactions <run> --x features --clusters 10   # k-means clusters of the encodings

The CVX estimator of Liang et al. (NeurIPS 2023) on discretised modalities
(:mod:`polyfuse.reporting.interactions`). ``x1`` / ``x2`` are, with ``--x predictions`` (default),
the classes predicted from each modality alone; with ``--x features``, k-means clusters of each
modality's encoder output (the paper's discretisation of features). ``y`` is the label
(``--target label``: the dataset's interactions as the models see them) or the fused run's own
prediction (``--target prediction``: the interactions its predictions use). A modality's
predictions / features come from a run trained on it alone (``--unimodal <modality>=<run>``,
evaluated on the same split; its sample ids must match), else from the fused run -- predictions
with every other modality marked absent (``present=False``, as ``polyfuse-explain``'s ablation and
the robustness curves do), features from its encoder. Prints ``R, U1, U2, S`` in bits and writes
them with the informations they split to ``<run>/explain/interactions.json`` (or ``--out``), and
the same estimate with ``y`` shuffled (``shuffled_target``): plug-in information estimates are
biased upwards on few samples per cell, and the shuffled estimate (true value 0) shows by how much.

A unimodal prediction of the label is a lossy summary of the modality: on a task where each
modality alone is at chance (the AV-digits ``synergy`` task) it carries nothing about the label,
so ``I(X1, X2; Y)`` and hence ``S`` of predictions are near 0 however well the fused model does;
``--x features`` keeps what the encoder saw (e.g. the digit) and can show the synergy.
"""

from __future__ import annotations

import argparse
import json
from itertools import islice
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy.cluster.vq import kmeans2
from torch import Tensor

from polyfuse.cli.errors import user_errors
from polyfuse.cli.eval import evaluation_loader
from polyfuse.errors import ConfigValueError
from polyfuse.reporting.interactions import decompose, joint_distribution
from polyfuse.reporting.runs import load_model
from polyfuse.robustness.evaluate import with_encodings
from polyfuse.robustness.missing import drop_modalities

__all__ = ["predicted_classes", "estimate_interactions", "main"]


@torch.no_grad()
def predicted_classes(model: Any, batches: Sequence[Any], keep: Sequence[str] | None = None
                      ) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """``(sample ids, predicted classes (N,), labels (N,), number of classes)`` of a classification
    model over ``batches``, with only the modalities ``keep`` present (``None``: all of them)."""
    ids: list[str] = []
    predictions, labels, classes = [], [], 0
    for batch in batches:
        encoded = model.encode(batch)
        if keep is not None:
            removed = [m for m in encoded if m not in keep]
            encoded = drop_modalities(encoded, removed, torch.ones(batch.batch_size, dtype=torch.bool))
        with with_encodings(model, encoded):
            logits = model(batch).outputs
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise ConfigValueError("polyfuse-explain interactions needs a classification head returning logits (B, C)")
        if "label" not in batch.targets:
            raise ConfigValueError("polyfuse-explain interactions needs a 'label' target (discrete labels)")
        ids += list(batch.ids)
        predictions.append(logits.argmax(-1).cpu().numpy())
        labels.append(batch.targets["label"].cpu().numpy())
        classes = int(logits.shape[1])
    if not ids:
        raise ConfigValueError("polyfuse-explain interactions: the split has no samples")
    return ids, np.concatenate(predictions), np.concatenate(labels), classes


@torch.no_grad()
def feature_clusters(model: Any, batches: Sequence[Any], modality: str, clusters: int, seed: int = 0
                     ) -> np.ndarray:
    """Cluster index ``(N,)`` of each sample's ``modality`` encoding (mean over its real tokens, then
    standardised) by k-means with ``clusters`` centres (scipy ``kmeans2``, k-means++ start, ``seed``):
    the paper's discretisation of continuous features."""
    pooled = []
    for batch in batches:
        encoded = model.encode(batch)[modality]
        tokens = encoded.tokens.float()  # (B, L, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool) if encoded.mask is None else encoded.mask.cpu()
        weights = mask.to(tokens.dtype).unsqueeze(-1)
        pooled.append(((tokens.cpu() * weights).sum(1) / weights.sum(1).clamp_min(1.0)).numpy())
    features = np.concatenate(pooled).astype(np.float64)
    features = (features - features.mean(0)) / (features.std(0) + 1e-8)
    _, assignment = kmeans2(features, min(clusters, len(features)), minit="++", seed=seed)
    return assignment.astype(np.int64)


def _load(run: Path, args: argparse.Namespace) -> tuple[Any, list[Any]]:
    """The model of ``run`` (eval mode) and its evaluation batches of ``args.split``."""
    module, cfg = load_model(run, args.checkpoint, trust_config=args.trust_config)
    loader = evaluation_loader(cfg, args.split, args.batch_size)
    return module.model.eval(), list(islice(iter(loader), args.max_batches) if args.max_batches else loader)


def estimate_interactions(args: argparse.Namespace) -> dict[str, Any]:
    """The decomposition for the runs in ``args`` (see :func:`parse_args`); returns what is written."""
    run = Path(args.run)
    unimodal = dict(item.split("=", 1) for item in args.unimodal)
    model, batches = _load(run, args)
    modalities = list(model.modalities)
    chosen = args.modalities or (modalities if len(modalities) == 2 else None)
    if chosen is None or len(chosen) != 2 or any(m not in modalities for m in chosen):
        raise ConfigValueError(f"--modalities must name two of the run's modalities {modalities}, got {chosen}")
    unknown = [m for m in unimodal if m not in chosen]
    if unknown:
        raise ConfigValueError(f"--unimodal names {unknown}, which are not among --modalities {chosen}")
    ids, fused, labels, classes = predicted_classes(model, batches)
    sources, values, accuracy = {}, [], {}
    for modality in chosen:
        source_model, source_batches = model, batches
        if modality in unimodal:
            source_model, source_batches = _load(Path(unimodal[modality]), args)
            sources[modality] = str(unimodal[modality])
        else:
            sources[modality] = f"{run} with only {modality} present" if args.x == "predictions" else str(run)
        other_ids, predicted, _, other_classes = predicted_classes(
            source_model, source_batches, None if modality in unimodal else [modality])
        if other_ids != ids:
            raise ConfigValueError(f"unimodal run {unimodal[modality]} ({modality}) has other samples on split "
                                   f"{args.split!r} than {run}: same data config and pairing seed expected")
        classes = max(classes, other_classes)
        accuracy[modality] = float((predicted == labels).mean())
        values.append(predicted if args.x == "predictions"
                      else feature_clusters(source_model, source_batches, modality, args.clusters, args.seed))
    classes = max(classes, int(labels.max()) + 1)
    size = classes if args.x == "predictions" else args.clusters
    target = labels if args.target == "label" else fused
    result = decompose(joint_distribution(values[0], values[1], target, sizes=(size, size, classes)))
    # the same estimate with y shuffled: what finite-sample bias alone gives (the true value is 0)
    shuffled = np.random.default_rng(args.seed).permutation(target)
    null = decompose(joint_distribution(values[0], values[1], shuffled, sizes=(size, size, classes)))
    return {"run": str(run), "split": args.split, "checkpoint": args.checkpoint, "modalities": list(chosen),
            "x": args.x, "x_sources": sources, "target": args.target, "samples": len(ids), "units": "bits",
            "accuracy": {**accuracy, "fused": float((fused == labels).mean())}, **result.as_dict(),
            "shuffled_target": null.as_dict()}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="polyfuse-explain interactions", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the multimodal training run directory")
    parser.add_argument("--modalities", nargs=2, default=None, metavar=("X1", "X2"),
                        help="the two modalities (default: the run's, when it has exactly two)")
    parser.add_argument("--unimodal", nargs="*", default=[], metavar="MODALITY=RUN",
                        help="a run trained on one modality alone; default: the fused run with the others absent")
    parser.add_argument("--x", choices=["predictions", "features"], default="predictions",
                        help="x1, x2: each modality's predicted class, or k-means clusters of its encoding")
    parser.add_argument("--clusters", type=int, default=10, help="k-means centres per modality (--x features)")
    parser.add_argument("--seed", type=int, default=0, help="k-means seed (--x features)")
    parser.add_argument("--target", choices=["label", "prediction"], default="label",
                        help="y: the dataset's labels, or the fused run's predicted classes")
    parser.add_argument("--split", default="test")
    parser.add_argument("--checkpoint", default="best", help="best | last | a checkpoint file")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-batches", type=int, default=None, help="only the first N batches")
    parser.add_argument("--trust-config", action="store_true",
                        help="rebuild runs whose config.yaml names callables outside polyfuse/torch/...")
    parser.add_argument("--out", default=None, help="JSON file (default: <run>/explain/interactions.json)")
    args = parser.parse_args(argv)
    bad = [item for item in args.unimodal if "=" not in item]
    if bad:
        parser.error(f"--unimodal takes MODALITY=RUN, got {bad}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with user_errors("polyfuse-explain interactions"):
        result = estimate_interactions(args)
    out = Path(args.out) if args.out else Path(args.run) / "explain" / "interactions.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    total = result["info_joint"]
    print(f"polyfuse-explain interactions: {result['modalities'][0]} (x1), {result['modalities'][1]} (x2), "
          f"y = {result['target']}, {result['samples']} samples of {result['split']!r}; bits (share of I(X1,X2;Y))")
    for key, name in [("redundancy", "R"), ("unique1", "U1"), ("unique2", "U2"), ("synergy", "S")]:
        share = f" ({result[key] / total:.0%})" if total > 0 else ""
        print(f"  {name:<3} {result[key]:.4f}{share}")
    print(f"  I(X1;Y) {result['info1']:.4f}  I(X2;Y) {result['info2']:.4f}  I(X1,X2;Y) {total:.4f}  "
          f"H(Y) {result['label_entropy']:.4f}")
    null = result["shuffled_target"]
    print(f"  with y shuffled (finite-sample bias): R {null['redundancy']:.4f}  U1 {null['unique1']:.4f}  "
          f"U2 {null['unique2']:.4f}  S {null['synergy']:.4f}")
    print(f"polyfuse-explain: interactions.json: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m polyfuse.alignment.report RUN_DIR``: canonical correlations between a trained run's encoders.

Rebuilds the run's model and weights (:func:`polyfuse.reporting.runs.load_model`: ``config.yaml``
written by ``polyfuse-train``, checkpoint ``best``/``last``/a file) and data, and prints, for each
pair of modalities, the canonical correlations of their pooled embeddings: linear CCA fitted on the
training split, correlations reported on ``--split`` (see
:func:`polyfuse.alignment.analysis.encoder_correlations`).

Example::

    python -m polyfuse.alignment.report outputs/train/runs/2025-01-01_00-00-00 --split test --k 10
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Sequence

from polyfuse.alignment.analysis import CorrelationReport, encoder_correlations

__all__ = ["run_correlations", "main"]


def run_correlations(run_dir: str | Path, split: str = "test", k: int = 10, reg: float = 1e-3,
                     checkpoint: str = "best") -> dict[str, CorrelationReport]:
    """Held-out canonical correlations for every pair of the run's modalities, keyed ``"a-b"``."""
    import hydra

    from polyfuse.reporting.runs import load_model

    module, cfg = load_model(run_dir, checkpoint)
    # every modality present, no augmentation: CCA is fitted on the training split, scored on `split`
    wanted = {"test_splits": [split], "augment": False, "missing": None, "missing_train": None}
    datamodule = hydra.utils.instantiate(cfg.data, **{key: v for key, v in wanted.items() if key in cfg.data})
    datamodule.setup("fit")
    datamodule.setup("test")
    loaders = datamodule.test_dataloader()
    heldout = list(loaders[0] if isinstance(loaders, (list, tuple)) else loaders)
    fitting = list(datamodule.train_dataloader())
    modalities = list(module.model.modalities)
    return {f"{first}-{second}": encoder_correlations(module.model, fitting, first, second, k=k, reg=reg,
                                                      heldout=heldout)
            for first, second in itertools.combinations(modalities, 2)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--split", default="test")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--reg", type=float, default=1e-3)
    parser.add_argument("--checkpoint", default="best", help="best | last | a checkpoint file")
    args = parser.parse_args(argv)
    reports = run_correlations(args.run_dir, args.split, args.k, args.reg, args.checkpoint)
    summary = {pair: {"heldout_mean": round(float(r.heldout.mean()), 4),
                      "heldout": [round(float(v), 4) for v in r.heldout],
                      "fitted_mean": round(float(r.fitted.mean()), 4), "samples": r.samples}
               for pair, r in reports.items()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

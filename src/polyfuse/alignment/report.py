"""``python -m polyfuse.alignment.report RUN_DIR``: canonical correlations between a trained run's encoders.

Rebuilds the model and data from ``RUN_DIR/config.yaml`` (written by ``polyfuse-train``), loads
``RUN_DIR/checkpoints/best.ckpt`` (or ``--ckpt``) and prints, for each pair of modalities, the
held-out canonical correlations of their pooled embeddings on a split (see
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

import torch

from polyfuse.alignment.analysis import CorrelationReport, encoder_correlations

__all__ = ["run_correlations", "main"]


def run_correlations(run_dir: str | Path, split: str = "test", k: int = 10, reg: float = 1e-3,
                     ckpt: str | Path | None = None) -> dict[str, CorrelationReport]:
    """Held-out canonical correlations for every pair of the run's modalities, keyed ``"a-b"``."""
    import hydra
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: pass a run directory written by polyfuse-train")
    cfg = OmegaConf.load(config_path)
    ckpt_path = Path(ckpt) if ckpt else run_dir / "checkpoints" / "best.ckpt"
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt_path} not found; pass --ckpt")
    cfg.data.missing, cfg.data.missing_train = None, None  # correlations need every modality present
    module = hydra.utils.instantiate(cfg.model)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    module.eval()
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("test")
    loader = datamodule._loader(split, shuffle=False)
    modalities = list(module.model.modalities)
    reports = {}
    for first, second in itertools.combinations(modalities, 2):
        reports[f"{first}-{second}"] = encoder_correlations(module.model, loader, first, second, k=k, reg=reg)
    return reports


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--split", default="test")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--reg", type=float, default=1e-3)
    parser.add_argument("--ckpt", default=None)
    args = parser.parse_args(argv)
    reports = run_correlations(args.run_dir, args.split, args.k, args.reg, args.ckpt)
    summary = {pair: {"heldout_mean": round(float(r.heldout.mean()), 4),
                      "heldout": [round(float(v), 4) for v in r.heldout],
                      "fitted_mean": round(float(r.fitted.mean()), 4), "samples": r.samples}
               for pair, r in reports.items()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

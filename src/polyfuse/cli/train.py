"""``polyfuse-train``: compose a Hydra config, train, test, and leave a run directory.

Examples::

    polyfuse-train                                   # default AV-digits experiment
    polyfuse-train model/fusion=concat data.modalities=[image]
    polyfuse-train experiment=avdigits_audio trainer.max_epochs=5
    polyfuse-train -m model/fusion=concat,late seed=0,1        # multirun sweep
    polyfuse-train hydra.run.dir=<run dir> ckpt_path=last      # resume a killed run in place
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from polyfuse.cli.config import config_dir, register_resolvers
from polyfuse.cli.errors import user_errors

register_resolvers()

# Only Hydra and OmegaConf at import: DataLoader workers (spawn) re-import the program's main module,
# this one under `python -m polyfuse.cli.train` or the `polyfuse-train` script. Lightning and the
# training stack load in `train`, in the main process only (polyfuse.cli.experiment).


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one experiment from a composed config; ``(summary, objects)``
    (:func:`polyfuse.cli.experiment.train`, which documents both)."""
    from polyfuse.cli.experiment import train as run_experiment

    return run_experiment(cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``cfg.optimized_metric`` from the summary (for sweepers)."""
    with user_errors("polyfuse-train"):  # a user's mistake: one message, exit status 2 (cli/errors.py)
        summary, _ = train(cfg)
    metric = cfg.get("optimized_metric")
    if metric:
        value = summary.get("test", {}).get(metric, summary.get("best_score"))
        return None if value is None else float(value)
    return None


if __name__ == "__main__":
    main()

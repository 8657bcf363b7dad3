"""One encoder of a finished ``polyfuse-train`` run, rebuilt and loaded, for a new model.

Self-supervised features are evaluated by training a small classifier on frozen encoders (linear
probing; e.g. the audio-visual correspondence features of Arandjelović & Zisserman, "Look, Listen and
Learn", ICCV 2017). :func:`encoder_from_run` is the config-level way to do it: it rebuilds
``model.encoders.<modality>`` from the run's ``config.yaml`` and loads the ``model.encoders.<modality>.*``
weights of its checkpoint, so any experiment can start from a run's encoder::

    model:
      encoders:
        video: {_target_: polyfuse.training.run_encoder.encoder_from_run, run_dir: <run>, modality: video}
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from polyfuse.encoders.loading import build_loaded
from polyfuse.training.run_dir import checkpoint_file, load_config, load_weights

__all__ = ["encoder_from_run", "ENCODER_PREFIX"]

#: where a run's encoders sit in its LightningModule's state dict (PolyfuseLitModule.model.encoders)
ENCODER_PREFIX = "model.encoders."


def encoder_from_run(run_dir: str | Path, modality: str, checkpoint: str = "best", freeze: int | bool = True,
                     trust_config: bool = False, **options: Any) -> nn.Module:
    """The ``modality`` encoder of the run in ``run_dir``, with the run's trained weights.

    Args:
        run_dir: a ``polyfuse-train`` run directory (``config.yaml`` + ``checkpoints/``).
        modality: which of the run's ``model.encoders`` to take (``video``, ``audio``, ...).
        checkpoint: ``best`` / ``last`` or a weights file (see :func:`~polyfuse.training.run_dir.checkpoint_file`).
        freeze: as every encoder's ``freeze``, applied after loading; ``True`` (the default) freezes all
            of it, as linear probing needs.
        trust_config: allow ``_target_`` callables outside polyfuse in the run's config
            (:func:`~polyfuse.training.run_dir.load_config`).
        options: encoder arguments that replace the run's (``output``, ``proj_dim`` -- a new projection
            starts fresh --, ``grad_checkpointing``, ...); the architecture must still fit the weights.

    Raises:
        KeyError: the run has no trained encoder for ``modality`` (the message lists those it has).
        ~polyfuse.encoders.loading.CheckpointError: the weights do not fit the rebuilt encoder (missing /
            unexpected keys listed).
    """
    import hydra

    run_dir = Path(run_dir)
    cfg = load_config(run_dir, trust_config=trust_config)
    weights = checkpoint_file(run_dir, checkpoint)
    everything = load_weights(weights)
    prefix = f"{ENCODER_PREFIX}{modality}."
    state = {key[len(prefix):]: value for key, value in everything.items() if key.startswith(prefix)}
    encoders = cfg.model.get("encoders") or {}
    if not state or encoders.get(modality) is None:  # the model builds encoders of its modalities only
        trained = sorted({key[len(ENCODER_PREFIX):].split(".")[0] for key in everything if key.startswith(ENCODER_PREFIX)})
        raise KeyError(f"{run_dir}: the run has no trained model.encoders.{modality} (its checkpoint {weights.name} "
                       f"holds encoders {trained})")
    build = partial(hydra.utils.instantiate, encoders[modality])
    return build_loaded(build, {}, {**options, "freeze": freeze}, state, f"{weights} [{prefix}*]")

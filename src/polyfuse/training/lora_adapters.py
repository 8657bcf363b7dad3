"""Save a :class:`~polyfuse.models.MultimodalLM`'s LoRA adapters alone at the end of training."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)


class SaveLoRAAdapters(Callback):
    """At the end of fitting, write the model's LoRA adapters (``adapter_model.safetensors`` +
    ``adapter_config.json``, a few kB to MB) to ``dirpath`` -- next to, not inside, the full checkpoints.

    Load them onto the same base LM with ``MultimodalLM.load_lora(dirpath)`` (stage 1 build) and fold
    them in with ``merge_lora()``. Does nothing for a model without adapters. Rank 0 writes.

    Args:
        dirpath: output folder (``${paths.output_dir}/lora`` in the stage-2 experiment).
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        model = getattr(pl_module, "model", None)
        if model is None or not hasattr(model, "save_lora") or not hasattr(model.lm, "peft_config"):
            return
        if trainer.is_global_zero:
            model.save_lora(self.dirpath)
            log.info("LoRA adapters saved to %s", self.dirpath)

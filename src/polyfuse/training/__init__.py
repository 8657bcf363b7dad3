"""Lightning glue: module, data module, callbacks."""

from polyfuse.training.callbacks import RunArtifacts
from polyfuse.training.datamodule import AVDigitsDataModule
from polyfuse.training.module import PolyfuseLitModule
from polyfuse.training.multimodal_datamodule import MultimodalDataModule

__all__ = ["PolyfuseLitModule", "AVDigitsDataModule", "MultimodalDataModule", "RunArtifacts"]

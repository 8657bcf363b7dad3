"""Lightning glue: module, data module, callbacks."""

from polyfuse.training.callbacks import RunArtifacts
from polyfuse.training.datamodule import AVDigitsDataModule
from polyfuse.training.module import PolyfuseLitModule

__all__ = ["PolyfuseLitModule", "AVDigitsDataModule", "RunArtifacts"]

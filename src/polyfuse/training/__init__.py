"""Lightning glue: module, data module, callbacks.

The names below load on first use (PEP 562), so that importing one light submodule
(``polyfuse.training.run_dir``, ``checkpoint_io``) does not import Lightning: ``polyfuse-eval`` and
``polyfuse-explain`` load runs through them, and their spawned loader workers re-import the
program's main module (docs/data.md, "Worker start-up").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyfuse.lazy import lazy_attributes

if TYPE_CHECKING:
    from polyfuse.training.callbacks import RunArtifacts
    from polyfuse.training.datamodule import AVDigitsDataModule
    from polyfuse.training.module import PolyfuseLitModule
    from polyfuse.training.multimodal_datamodule import MultimodalDataModule

#: public name -> the submodule that defines it
_LAZY = {"PolyfuseLitModule": "module", "AVDigitsDataModule": "datamodule",
         "MultimodalDataModule": "multimodal_datamodule", "RunArtifacts": "callbacks"}

__all__ = ["PolyfuseLitModule", "AVDigitsDataModule", "MultimodalDataModule", "RunArtifacts"]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

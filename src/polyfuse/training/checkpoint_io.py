"""Reading Lightning checkpoints in one process: a ``.ckpt`` file or a sharded FSDP2 directory.

Sharded checkpoints (``save_distributed_checkpoint=True`` under
:class:`~polyfuse.training.sharding.FSDP2Strategy`) are directories: one
``torch.distributed.checkpoint`` shard per rank (``__<rank>_0.distcp`` + ``.metadata``) and
Lightning's ``meta.pt`` (loops, callbacks, hyper-parameters). :func:`read_checkpoint` reads either
layout without a process group; :func:`match_parameter_shapes` fits FSDP2's ``(1,)`` scalars back
to an unsharded model.

Only torch here, no Lightning: ``polyfuse-eval`` and ``polyfuse-explain`` load runs through this
module, and the loader workers they spawn re-import their main module (docs/data.md, "Worker
start-up").
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["SHARDED_METADATA", "is_sharded_checkpoint", "read_checkpoint", "match_parameter_shapes"]

SHARDED_METADATA = "meta.pt"  # Lightning's non-tensor part of a sharded checkpoint directory


def is_sharded_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a sharded (``torch.distributed.checkpoint``) Lightning checkpoint directory."""
    path = Path(path)
    return path.is_dir() and (path / ".metadata").is_file() and (path / SHARDED_METADATA).is_file()


def read_checkpoint(path: str | Path, weights: bool = True) -> dict[str, Any]:
    """A Lightning checkpoint as one dict, from a file or a sharded directory (full tensors, on CPU).

    ``weights=False`` reads only the non-tensor part of a sharded directory (``meta.pt``: loops,
    ``global_step``, callbacks, hyper-parameters), not the shards. Loads with ``weights_only=True``.
    """
    path = Path(path)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    if not is_sharded_checkpoint(path):
        raise FileNotFoundError(f"{path}: neither a checkpoint file nor a sharded checkpoint directory "
                                f"(one with .metadata and {SHARDED_METADATA})")
    checkpoint = dict(torch.load(path / SHARDED_METADATA, map_location="cpu", weights_only=True))
    if weights:
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with tempfile.TemporaryDirectory(prefix=".consolidate-", dir=path.parent) as scratch:
            target = Path(scratch) / "full.pt"
            dcp_to_torch_save(path, target)  # no process group needed
            checkpoint.update(torch.load(target, map_location="cpu", weights_only=True))
    return checkpoint


def match_parameter_shapes(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` with each ``(1,)`` entry reshaped to 0-d where ``module`` has a 0-d tensor of that name
    (weights saved under FSDP2, see :func:`polyfuse.training.sharding.promote_scalar_parameters`); other entries unchanged."""
    scalars = {name for name, value in [*module.named_parameters(), *module.named_buffers()] if value.dim() == 0}
    return {key: value.reshape(()) if key in scalars and value.shape == (1,) else value for key, value in state.items()}

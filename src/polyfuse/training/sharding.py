"""Fully sharded data parallel (FSDP2, ``torch.distributed.fsdp.fully_shard``) for polyfuse models.

FSDP2 (Zhao et al., 2023, "PyTorch FSDP"; the per-parameter ``DTensor`` rewrite of torch >= 2.4)
shards every parameter, gradient and optimizer state over the data-parallel processes; each
*FSDP unit* all-gathers its parameters just before its forward (and backward) and frees them after.

This module is the one place that decides the units:

* :data:`FSDP_UNIT_CLASSES` -- the transformer blocks of the encoders (:class:`TransformerBlock`:
  ViT, BERT, CLIP text) and the fusion sub-layers (:class:`ContextAttention`, :class:`FeedForward`;
  fusions built from ``TransformerBlock`` are covered by the first entry). Each instance becomes its
  own unit; every other parameter (embeddings, CNNs, projections, heads, norms) belongs to the root
  unit, the :class:`~polyfuse.models.MultimodalModel`.
* :func:`shard_lightning_module` -- called from ``PolyfuseLitModule.configure_model`` under
  :class:`FSDP2Strategy`; shards the units innermost first, then ``module.model`` as the
  root, then each auxiliary objective that holds parameters (its own root: it is called outside the
  model's forward).
* :class:`FSDP2Strategy` -- Lightning's ``ModelParallelStrategy`` with every process in the
  data-parallel dimension (plain FSDP, no tensor parallelism) and the unit classes as an argument.

FSDP2 cannot shard 0-d parameters (the contrastive head's ``logit_scale`` / ``logit_bias``):
:func:`promote_scalar_parameters` turns each into a 1-element vector before sharding (broadcasting
keeps every computation the same), so FSDP checkpoints hold them with shape ``(1,)``;
:func:`~polyfuse.training.checkpoint_io.match_parameter_shapes` puts them back to 0-d when the
weights are loaded into an unsharded model (``polyfuse-eval``).

The root unit keeps its parameters gathered between forward and backward (FSDP2's default for the
root), so a head's loss (``head.loss``, e.g. the contrastive logit scale) may use them after
``model(batch)`` returns.

Sharded checkpoints (``save_distributed_checkpoint=True``) are directories: one
``torch.distributed.checkpoint`` shard per rank (``__<rank>_0.distcp`` + ``.metadata``) and
Lightning's ``meta.pt`` (loops, callbacks, hyper-parameters).
:func:`polyfuse.training.checkpoint_io.read_checkpoint` reads either layout in one process, without
a process group, and without importing Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from polyfuse.fusion.blocks import ContextAttention, FeedForward
from polyfuse.layers import TransformerBlock

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule
    from torch.distributed.device_mesh import DeviceMesh

__all__ = ["FSDP_UNIT_CLASSES", "FSDP2Strategy", "shard_units", "shard_lightning_module", "promote_scalar_parameters"]

FSDP_UNIT_CLASSES: tuple[type[nn.Module], ...] = (TransformerBlock, ContextAttention, FeedForward)


def _resolve_classes(classes: Sequence[str | type[nn.Module]] | None) -> tuple[type[nn.Module], ...]:
    if classes is None:
        return FSDP_UNIT_CLASSES
    from hydra.utils import get_class

    resolved = tuple(get_class(c) if isinstance(c, str) else c for c in classes)
    for cls in resolved:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"FSDP unit_classes: {cls!r} is not an nn.Module class")
    return resolved


def promote_scalar_parameters(root: nn.Module) -> list[str]:
    """Replace every 0-d parameter under ``root`` by a ``(1,)`` parameter of the same value and
    ``requires_grad`` (``fully_shard`` refuses scalars); returns their names. Call before the
    optimizer is built."""
    names = []
    for module_name, module in root.named_modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dim() == 0:
                setattr(module, name, nn.Parameter(param.detach().reshape(1), requires_grad=param.requires_grad))
                names.append(f"{module_name}.{name}" if module_name else name)
    return names


def shard_units(root: nn.Module, mesh: "DeviceMesh", unit_classes: Sequence[type[nn.Module]] = FSDP_UNIT_CLASSES,
                reshard_after_forward: bool = True) -> list[str]:
    """``fully_shard`` every submodule of ``root`` that is an instance of ``unit_classes`` (innermost
    first), then ``root`` itself; returns the unit names (``""`` is the root). A module that is
    already sharded is left as it is, so calling this twice (Lightning calls ``configure_model`` per
    stage) changes nothing."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    options: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    units = [(name, module) for name, module in root.named_modules()
             if name and isinstance(module, tuple(unit_classes)) and any(True for _ in module.parameters())]
    names = []
    for name, module in reversed(units):  # children before parents: a parent unit skips its children's parameters
        if not isinstance(module, FSDPModule):
            fully_shard(module, **options)
        names.append(name)
    if not isinstance(root, FSDPModule):
        fully_shard(root, **options)
    return [*reversed(names), ""]


def shard_lightning_module(module: "LightningModule", unit_classes: Sequence[type[nn.Module]] | None = None,
                           reshard_after_forward: bool = True) -> dict[str, list[str]]:
    """Shard a ``PolyfuseLitModule`` over its device mesh's ``data_parallel`` dimension: the units of
    ``module.model`` and the model as root, then each objective with parameters. Returns the units per
    root (``{"model": [...], "objectives.<name>": [...]}``). Raises if a parameter is left unsharded."""
    from torch.distributed.tensor import DTensor

    mesh = module.device_mesh
    if mesh is None:
        raise RuntimeError("shard_lightning_module: no device mesh (needs FSDP2Strategy / ModelParallelStrategy)")
    if "tensor_parallel" in (mesh.mesh_dim_names or ()) and mesh["tensor_parallel"].size() != 1:
        raise ValueError(f"polyfuse shards data-parallel only; the device mesh has tensor_parallel size "
                         f"{mesh['tensor_parallel'].size()} (use polyfuse.training.sharding.FSDP2Strategy, or "
                         "ModelParallelStrategy(data_parallel_size=<all processes>, tensor_parallel_size=1))")
    data_mesh = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
    classes = _resolve_classes(unit_classes)
    roots: dict[str, nn.Module] = {"model": module.model}
    for name, objective in getattr(module, "objectives", {}).items():
        if any(True for _ in objective.parameters()):
            roots[f"objectives.{name}"] = objective
    for root in roots.values():
        promote_scalar_parameters(root)
    units = {name: shard_units(root, data_mesh, classes, reshard_after_forward) for name, root in roots.items()}
    plain = [name for name, param in module.named_parameters() if not isinstance(param, DTensor)]
    if plain:
        raise ValueError(f"FSDP: parameters outside every sharded module (add their module to a root in "
                         f"polyfuse/training/sharding.py): {plain[:10]}")
    return units


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` as plain FSDP2: every process is in the data-parallel
    dimension (the parent's ``"auto"`` puts the processes of one node in the tensor-parallel one),
    ``tensor_parallel_size=1``. Works on CPU (gloo) and GPU (nccl).

    The model is sharded by the LightningModule's ``configure_model``
    (``PolyfuseLitModule`` -> :func:`shard_lightning_module` with this strategy's options).

    Args:
        unit_classes: classes (or dotted class paths) whose instances become FSDP units; ``None`` =
            :data:`FSDP_UNIT_CLASSES`.
        reshard_after_forward: free gathered parameters after each unit's forward (ZeRO-3, least
            memory); ``False`` keeps them until backward (ZeRO-2-like: one all-gather per step).
        save_distributed_checkpoint: ``True``: each rank writes its shard (a checkpoint directory);
            ``False``: full weights gathered into one file on rank 0 (loadable without polyfuse).
        process_group_backend: ``"gloo"`` (CPU) / ``"nccl"`` (GPU); ``None`` picks from the device.
        timeout: collective timeout.
    """

    def __init__(self, unit_classes: Sequence[str | type[nn.Module]] | None = None, reshard_after_forward: bool = True,
                 save_distributed_checkpoint: bool = True, process_group_backend: str | None = None,
                 timeout: timedelta | None = default_pg_timeout) -> None:
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend, timeout=timeout)
        self.unit_classes = _resolve_classes(unit_classes)
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

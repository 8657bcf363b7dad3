"""Samplers for evaluating on the full split exactly once under data parallelism.

The padding problem: ``torch.utils.data.DistributedSampler`` (which Lightning injects into every
loader by default) pads the index list by repeating samples until it divides by the world size, so
with 269 test samples on 2 ranks one sample is scored twice and accuracy / recall are biased. For
training that is harmless; for evaluation it is wrong.

:func:`evaluation_sampler` returns Lightning's own
:class:`~lightning.pytorch.overrides.distributed.UnrepeatedDistributedSampler` (rank ``r`` takes
indices ``r, r + W, r + 2W, ...``; ranks may differ by one sample, and so by one batch) when a
process group of more than one rank is running, and ``None`` otherwise. Because it is a
``DistributedSampler``, Lightning keeps it instead of injecting its padded one.

Uneven shards are safe in evaluation: no collective runs per batch (DDP syncs buffers only in
training forward passes), and torchmetrics gathers states of uneven size at ``compute()``. They
are not safe for training, which keeps the padded sampler.
"""

from __future__ import annotations

from typing import Sized

import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DistributedSampler

__all__ = ["evaluation_sampler", "UnrepeatedDistributedSampler"]


def evaluation_sampler(dataset: Sized) -> DistributedSampler | None:
    """A sampler giving each rank a disjoint, unpadded, in-order shard of ``dataset``; ``None``
    (use the loader's default sequential order) outside a multi-process group.

    Call it when the loader is built (``val_dataloader()`` / ``test_dataloader()``): Lightning has
    initialised the process group by then.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return UnrepeatedDistributedSampler(dataset, num_replicas=dist.get_world_size(), rank=dist.get_rank(),
                                        shuffle=False)

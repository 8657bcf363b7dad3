"""Gathering features from every rank for losses whose negatives span the global batch.

Same semantics as open_clip's ``gather_features`` (Ilharco et al., 2021), for one tensor at a time:

* ``gather_with_grad=True``: an autograd all-gather; the backward pass sums, on each rank, the
  gradients every rank computed for that rank's features.
* ``gather_with_grad=False``: a plain all-gather (no gradient through other ranks' copies); unless
  ``local_loss``, the local slice is put back as the original tensor so the local features still
  receive the gradient of this rank's loss.

Every rank must pass the same batch size (use ``drop_last`` or a padding sampler).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from polyfuse.distributed import rank_and_world

__all__ = ["distributed_world", "gather_features"]


def distributed_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the given values, else those of the default process group, else ``(0, 1)``."""
    group_rank, group_size = rank_and_world()
    return (group_rank if rank is None else rank), (group_size if world_size is None else world_size)


def _all_gather_with_grad(tensor: Tensor) -> list[Tensor]:
    # imported here: ``torch.distributed.nn`` is a submodule that ``import torch.distributed`` does not
    # load (Lightning happens to import it; a plain DDP script does not -- issue #18)
    from torch.distributed.nn.functional import all_gather

    return list(all_gather(tensor))


def _all_gather(tensor: Tensor, world_size: int) -> list[Tensor]:
    gathered = [torch.zeros_like(tensor) for _ in range(world_size)]
    dist.all_gather(gathered, tensor.detach().contiguous())
    return gathered


def gather_features(features: Tensor, *, local_loss: bool = False, gather_with_grad: bool = False,
                    rank: int | None = None, world_size: int | None = None) -> Tensor:
    """``features: (B, ...)`` on every rank -> ``(world_size * B, ...)`` in rank order.

    Returns ``features`` itself when there is one process.
    """
    rank, world_size = distributed_world(rank, world_size)
    if world_size == 1:
        return features
    if gather_with_grad:
        return torch.cat(_all_gather_with_grad(features), dim=0)
    gathered = _all_gather(features, world_size)
    if not local_loss:
        gathered[rank] = features  # keep the gradient path for this rank's own features
    return torch.cat(gathered, dim=0)

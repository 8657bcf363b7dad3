"""The process group, as the data, training and checkpoint code needs it (no Lightning import).

:func:`gather_from_ranks` serves per-rank state in checkpoints: gather every rank's value to the
process that writes the file.
Lightning calls ``state_dict`` / ``on_save_checkpoint`` hooks on every rank when it saves (rank 0
writes the file), so a collective there is safe; each rank then restores its own entry.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

__all__ = ["rank_and_world", "gather_from_ranks"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_from_ranks(local: Any) -> list[Any]:
    """Every rank's ``local`` (picklable, on the CPU), in rank order; ``[local]`` in one process."""
    _, world = rank_and_world()
    if world == 1:
        return [local]
    values: list[Any] = [None] * world
    dist.all_gather_object(values, local)
    return values

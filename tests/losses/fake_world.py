"""Simulate one rank of a multi-process group in a single process (monkeypatched all-gathers).

Used by the loss tests the way open_clip tests its gather: the "other ranks" hold fixed slices of
known global tensors; the local slice is the tensor the loss passes in, so gradients reach it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def fake_world(monkeypatch, rank: int, globals_: list[Tensor], world_size: int = 2) -> None:
    """Patch ``dist.all_gather`` and the autograd all-gathers to act as ``rank`` of ``world_size``.

    ``globals_``: the global (concatenated) tensors that may be gathered; a gathered local tensor is
    recognised by its values, and validity masks (any other tensor) are gathered as all-ones.
    """

    def chunks_for(tensor: Tensor) -> list[Tensor]:
        for full in globals_:
            pieces = list(full.detach().chunk(world_size, dim=0))
            if pieces[rank].shape == tensor.shape and torch.equal(pieces[rank], tensor.detach()):
                return pieces
        return [torch.ones_like(tensor) for _ in range(world_size)]

    def all_gather(output: list[Tensor], tensor: Tensor, *args, **kwargs) -> None:
        for slot, piece in zip(output, chunks_for(tensor)):
            slot.copy_(piece)

    def all_gather_with_grad(tensor: Tensor, *args, **kwargs) -> tuple[Tensor, ...]:
        pieces = chunks_for(tensor)
        pieces[rank] = tensor
        return tuple(pieces)

    monkeypatch.setattr(dist, "all_gather", all_gather)
    monkeypatch.setattr(torch.distributed.nn.functional, "all_gather", all_gather_with_grad)
    monkeypatch.setattr(torch.distributed.nn, "all_gather", all_gather_with_grad)

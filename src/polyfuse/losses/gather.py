"""Gathering features from every rank for losses whose negatives span the global batch.

Same semantics as open_clip's ``gather_features`` (Ilharco et al., 2021), for one tensor at a time:

* ``gather_with_grad=True``: an autograd all-gather; the backward pass sums, on each rank, the
  gradients every rank computed for that rank's features.
* ``gather_with_grad=False``: a plain all-gather (no gradient through other ranks' copies); unless
  ``local_loss``, the local slice is put back as the original tensor so the local features still
  receive the gradient of this rank's loss.

Every rank must pass the same batch size (use ``drop_last`` or a padding sampler).

:func:`neighbour_exchange` / :func:`neighbour_exchange_bidir` pass a tensor to the next rank(s) of a
ring instead (point-to-point, with gradient: the backward sends each gradient back to the rank the
tensor came from), for SigLIP's chunked loss (Zhai et al., 2023), as open_clip's ``NeighbourExchange``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from polyfuse.distributed import rank_and_world

__all__ = ["distributed_world", "gather_features", "neighbour_exchange", "neighbour_exchange_bidir"]


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


def _exchange(sends: list[tuple[Tensor, int]], receives: list[tuple[Tensor, int]]) -> None:
    ops = [dist.P2POp(dist.isend, tensor.contiguous(), peer) for tensor, peer in sends]
    ops += [dist.P2POp(dist.irecv, tensor, peer) for tensor, peer in receives]
    for request in dist.batch_isend_irecv(ops):
        request.wait()


class _NeighbourExchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor, to_rank: int, from_rank: int) -> Tensor:  # type: ignore[override]
        ctx.to_rank, ctx.from_rank = to_rank, from_rank
        received = torch.empty_like(tensor)
        _exchange([(tensor, to_rank)], [(received, from_rank)])
        return received

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return _NeighbourExchange.apply(grad, ctx.from_rank, ctx.to_rank), None, None


class _NeighbourExchangeBidir(torch.autograd.Function):
    @staticmethod
    def forward(ctx, to_left: Tensor, to_right: Tensor, left: int, right: int) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        ctx.left, ctx.right = left, right
        from_right, from_left = torch.empty_like(to_left), torch.empty_like(to_right)
        _exchange([(to_left, left), (to_right, right)], [(from_right, right), (from_left, left)])
        return from_right, from_left

    @staticmethod
    def backward(ctx, grad_from_right: Tensor, grad_from_left: Tensor):  # type: ignore[override]
        # what came from the right goes back right, what came from the left goes back left; the left
        # neighbour answers with the gradient of what this rank sent it (to_left), the right one likewise
        grad_to_left, grad_to_right = _NeighbourExchangeBidir.apply(grad_from_right, grad_from_left, ctx.right,
                                                                    ctx.left)
        return grad_to_left, grad_to_right, None, None


def neighbour_exchange(tensor: Tensor, to_rank: int, from_rank: int) -> Tensor:
    """Send ``tensor`` to ``to_rank`` and return the tensor of the same shape received from ``from_rank``
    (every rank calls it); gradients flow back to the sender."""
    return _NeighbourExchange.apply(tensor, to_rank, from_rank)


def neighbour_exchange_bidir(to_left: Tensor, to_right: Tensor, left: int, right: int) -> tuple[Tensor, Tensor]:
    """Send ``to_left`` to rank ``left`` and ``to_right`` to rank ``right`` at once; return ``(from_right,
    from_left)``, what those ranks sent this way. ``left != right`` (a ring of 3 or more ranks)."""
    return _NeighbourExchangeBidir.apply(to_left, to_right, left, right)

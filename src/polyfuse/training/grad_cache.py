"""Gradient caching: a contrastive loss over a batch larger than activation memory allows.

Gao, Zhang, Han & Callan (2021), "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup". The loss of a contrastive objective couples every sample of the batch, but its
gradient with respect to the parameters factors through the per-sample embeddings:

1. embed the batch chunk by chunk without autograd graphs (:func:`torch.no_grad`), keeping only
   the embeddings (``(B, E)``: a few kB per sample instead of every activation);
2. compute the loss on all embeddings at once (under DDP its cross-rank gather too) and the
   gradient of the loss with respect to each embedding (the *cache*);
3. embed each chunk again, with a graph, and back-propagate ``Σ embedding · cached gradient``
   (the *surrogate*), which gives each parameter exactly its share of the full-batch gradient.

Peak activation memory is that of one chunk; the price is a second forward pass per chunk.
Randomness (dropout, modality dropout) is replayed: the RNG state before each chunk's first pass
is restored for its recompute, as the reference implementation's ``RandContext`` does, and the
global RNG continues afterwards from where the first passes left it.

Outputs are any nest of dicts / lists / tuples of tensors (a head's outputs): a tensor whose first
dimension is the chunk's row count is *per-sample* (concatenated over chunks; its cached gradient
is sliced back per chunk); a 0-d tensor is *shared* (a learned temperature or bias: taken from the
first chunk, its gradient flows through the last chunk's surrogate only). Anything else must be
equal in every chunk.

Not suited to models whose training-mode forward couples the samples of a batch (BatchNorm: each
chunk is normalised with its own statistics, and running statistics are updated twice per step).

Under DDP only the last chunk's backward all-reduces (the gradients of every chunk, once): the
other chunks run inside ``no_sync`` (plain PyTorch: ``embed`` is the DDP-wrapped model), or their
gradients are collected without firing DDP's hooks (a LightningModule, whose step runs inside the
wrapped model's forward; :meth:`CachedEmbeddings.backward`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from polyfuse.batch import Batch
from polyfuse.losses.masking import select_rows

__all__ = ["CachedEmbeddings", "RngState", "batch_chunks", "grad_cache_step"]


def batch_chunks(batch: Batch, chunk_size: int) -> list[Batch]:
    """``batch`` cut into consecutive chunks of at most ``chunk_size`` rows (validity flags kept)."""
    if chunk_size < 1:
        raise ValueError(f"grad_cache.chunk_size must be a positive number of rows, got {chunk_size}")
    size = batch.batch_size
    if size <= chunk_size:
        return [batch]
    chunks = []
    for start in range(0, size, chunk_size):
        rows = torch.zeros(size, dtype=torch.bool)
        rows[start:start + chunk_size] = True
        chunk = select_rows(batch, rows, size)
        chunks.append(replace(chunk, valid=None if batch.valid is None else batch.valid[rows.to(batch.valid.device)]))
    return chunks


@dataclass
class RngState:
    """The CPU generator's state and that of every CUDA device in use, to replay a chunk's randomness."""

    cpu: Tensor
    cuda: dict[int, Tensor]

    @classmethod
    def capture(cls) -> "RngState":
        devices = range(torch.cuda.device_count()) if torch.cuda.is_initialized() else ()
        return cls(torch.get_rng_state(), {d: torch.cuda.get_rng_state(d) for d in devices})

    @contextmanager
    def replay(self) -> Iterator[None]:
        """A context in which the generators start from this state; the global state is restored on exit."""
        with torch.random.fork_rng(devices=list(self.cuda)):
            torch.set_rng_state(self.cpu)
            for device, value in self.cuda.items():
                torch.cuda.set_rng_state(value, device)
            yield


def _merge(parts: list[Any], rows: list[int], where: str) -> Any:
    """One output nest from the chunks' nests (per-sample tensors concatenated, shared ones from chunk 0)."""
    first = parts[0]
    if isinstance(first, Tensor):
        if first.dim() == 0:
            return first.detach()
        for part, count in zip(parts, rows):
            if part.shape[0] != count:
                raise ValueError(f"grad cache: output {where or '<root>'} has {part.shape[0]} rows for a chunk of "
                                 f"{count}; outputs must be per-sample (first dimension = rows) or 0-d")
        return torch.cat([part.detach() for part in parts])
    if isinstance(first, dict):
        return {key: _merge([part[key] for part in parts], rows, f"{where}.{key}") for key in first}
    if isinstance(first, (list, tuple)):
        if not any(isinstance(item, Tensor) for item in first) and all(
                len(part) == count for part, count in zip(parts, rows)):  # per-sample values (ids, strings)
            return type(first)(item for part in parts for item in part)
        return type(first)(_merge([part[i] for part in parts], rows, f"{where}[{i}]") for i in range(len(first)))
    return first


def _leaves(value: Any, where: str = "") -> list[tuple[str, Tensor]]:
    """``(path, tensor)`` for every floating tensor of a nest, in a fixed order."""
    if isinstance(value, Tensor):
        return [(where, value)] if value.is_floating_point() else []
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, f"{where}.{key}")]
    if isinstance(value, (list, tuple)):
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, f"{where}[{i}]")]
    return []


def _with_leaves(value: Any, leaves: dict[str, Tensor], where: str = "") -> Any:
    """``value`` with its floating tensors replaced by ``leaves`` (same paths)."""
    if isinstance(value, Tensor):
        return leaves.get(where, value)
    if isinstance(value, dict):
        return {key: _with_leaves(item, leaves, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_with_leaves(item, leaves, f"{where}[{i}]") for i, item in enumerate(value))
    return value


def _surrogate(outputs: Any, grads: dict[str, Tensor], start: int, include_shared: bool) -> Tensor | None:
    """``Σ output · cached gradient`` over one chunk's outputs (its rows ``start:`` of each per-sample grad)."""
    total = None
    for where, tensor in _leaves(outputs):
        grad = grads.get(where)
        if grad is None or not tensor.requires_grad or (tensor.dim() == 0 and not include_shared):
            continue
        if tensor.dim():
            grad = grad[start:start + tensor.shape[0]]
        term = (tensor * grad.to(tensor.dtype)).sum()
        total = term if total is None else total + term
    return total


class CachedEmbeddings:
    """The first two phases of a step: every chunk embedded without a graph; :attr:`outputs` holds the whole
    batch's outputs as leaf tensors for the loss; :meth:`backward` runs the third phase.

    Args:
        embed: ``chunk -> outputs`` (a nest of tensors; see the module docstring).
        chunks: the batch, cut in chunks (:func:`batch_chunks`).
        rows: ``chunk -> number of rows``.
    """

    def __init__(self, embed: Callable[[Any], Any], chunks: Sequence[Any], rows: Callable[[Any], int]) -> None:
        self.embed, self.chunks = embed, list(chunks)
        self.states, parts = [], []
        with torch.no_grad():
            for chunk in self.chunks:
                self.states.append(RngState.capture())
                parts.append(embed(chunk))
        self.counts = [rows(chunk) for chunk in self.chunks]
        merged = _merge(parts, self.counts, "")
        self.leaves = {where: tensor.detach().requires_grad_() for where, tensor in _leaves(merged)}
        self.outputs = _with_leaves(merged, self.leaves)

    def backward(self, loss: Tensor, *, no_sync: Callable[[], AbstractContextManager] = nullcontext,
                 parameters: Sequence[Tensor] | None = None) -> None:
        """Back-propagate ``loss`` (a function of :attr:`outputs`, possibly scaled) into the model, chunk by chunk.

        Every chunk but the last runs inside ``no_sync``. With ``parameters``, their gradients are instead
        collected with :func:`torch.autograd.grad` (no gradient hook fires) and added to ``.grad`` just
        before the last chunk's backward: for a DDP reducer already armed for this step (the recompute
        runs inside the wrapped model's forward, as a LightningModule's does), whose hooks must fire once.
        """
        paths = list(self.leaves)
        grads = torch.autograd.grad(loss, [self.leaves[p] for p in paths], allow_unused=True)
        cached = {where: grad for where, grad in zip(paths, grads) if grad is not None}
        collected: list[Tensor | None] | None = None if parameters is None else [None] * len(parameters)
        start = 0
        for index, (chunk, state) in enumerate(zip(self.chunks, self.states)):
            is_last = index == len(self.chunks) - 1
            with (nullcontext() if is_last else no_sync()), state.replay():
                surrogate = _surrogate(self.embed(chunk), cached, start, include_shared=is_last)
                if surrogate is None:
                    raise ValueError("grad cache: no output of the model requires a gradient that the loss uses")
                if parameters is not None and collected is not None:
                    if not is_last:
                        for i, grad in enumerate(torch.autograd.grad(surrogate, parameters, allow_unused=True)):
                            if grad is not None:
                                collected[i] = grad if collected[i] is None else collected[i] + grad
                    else:
                        _add_to_grads(parameters, collected)
                        surrogate.backward()
                else:
                    surrogate.backward()
            start += self.counts[index]


def _add_to_grads(parameters: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    with torch.no_grad():
        for param, grad in zip(parameters, grads):
            if grad is not None:
                param.grad = grad if param.grad is None else param.grad.add_(grad)


def grad_cache_step(embed: Callable[[Any], Any], chunks: Sequence[Any], loss_fn: Callable[[Any], Tensor], *,
                    rows: Callable[[Any], int],
                    no_sync: Callable[[], AbstractContextManager] = nullcontext) -> tuple[Tensor, Any]:
    """One gradient-cached forward and backward over ``chunks``: ``(loss (detached), whole-batch outputs)``.

    ``loss_fn``: whole-batch outputs -> scalar loss (may gather across ranks). Under plain DDP pass the
    wrapped model as ``embed`` and its ``no_sync``: only the last chunk's backward all-reduces.
    """
    cache = CachedEmbeddings(embed, chunks, rows)
    loss = loss_fn(cache.outputs)
    cache.backward(loss, no_sync=no_sync)
    return loss.detach(), _detached(cache.outputs)


def _detached(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, dict):
        return {key: _detached(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(item) for item in value)
    return value

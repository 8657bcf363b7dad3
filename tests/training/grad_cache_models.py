"""A tiny two-tower model with dropout and the reference computations the grad-cache tests compare with.

Shared by test_grad_cache.py (one process) and grad_cache_ddp_worker.py (2-process gloo DDP).
Imports only torch and polyfuse's losses / grad cache.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.losses import ContrastiveLoss, SigLipLoss

IN_DIM, HIDDEN, EMBED = 5, 12, 4
LOSSES: dict[str, Callable[..., nn.Module]] = {"clip": ContrastiveLoss, "siglip": SigLipLoss}

Chunk = tuple[Tensor, Tensor]


class Towers(nn.Module):
    """Two MLP towers with dropout, a learned log-scale and bias: ``chunk -> {"a", "b" (rows, E), "scale", "bias"}``."""

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Sequential(nn.Linear(IN_DIM, HIDDEN), nn.GELU(), nn.Dropout(dropout), nn.Linear(HIDDEN, EMBED))
        self.b = nn.Sequential(nn.Linear(IN_DIM, HIDDEN), nn.GELU(), nn.Dropout(dropout), nn.Linear(HIDDEN, EMBED))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.log_scale = nn.Parameter(torch.tensor(1.5))
        self.bias = nn.Parameter(torch.tensor(-2.0))

    def forward(self, chunk: Chunk) -> dict[str, Tensor]:
        x_a, x_b = chunk
        return {"a": F.normalize(self.a(x_a), dim=-1), "b": F.normalize(self.b(x_b), dim=-1),
                "scale": self.log_scale.exp(), "bias": self.bias}


def global_inputs(size: int) -> Chunk:
    g = torch.Generator().manual_seed(1)
    return torch.randn(size, IN_DIM, generator=g), torch.randn(size, IN_DIM, generator=g)


def chunks_of(inputs: Chunk, chunk_size: int) -> list[Chunk]:
    return list(zip(inputs[0].split(chunk_size), inputs[1].split(chunk_size)))


def loss_of(loss_name: str, outputs: dict[str, Any], rank: int | None = None, world_size: int | None = None) -> Tensor:
    loss_fn = LOSSES[loss_name](rank=rank, world_size=world_size)
    if loss_name == "siglip":
        return loss_fn(outputs["a"], outputs["b"], outputs["scale"], outputs["bias"])
    return loss_fn(outputs["a"], outputs["b"], outputs["scale"])


def graph_reference(model: nn.Module, chunk_groups: list[tuple[int, list[Chunk]]], loss_name: str
                    ) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss and gradients with every activation kept: each ``(seed, chunks)`` group is embedded with the
    generator seeded ``seed`` (a rank's chunks), all embeddings concatenated, one loss, one backward."""
    model.zero_grad()
    parts = []
    for seed, chunks in chunk_groups:
        torch.manual_seed(seed)
        parts += [model(chunk) for chunk in chunks]
    outputs = {key: torch.cat([p[key] for p in parts]) for key in ("a", "b")}
    outputs.update(scale=parts[0]["scale"], bias=parts[0]["bias"])
    loss = loss_of(loss_name, outputs, rank=0, world_size=1)
    loss.backward()
    return loss.detach(), grads_of(model)


def grads_of(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter's gradient (zeros where it got none: the bias under InfoNCE)."""
    return {name: torch.zeros_like(p) if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}

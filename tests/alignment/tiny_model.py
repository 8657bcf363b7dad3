"""A tiny two/three-modality training module for objective tests (linear 'encoders' over vectors)."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from polyfuse.batch import Batch, Encoded, ModalityInput
from polyfuse.fusion.concat import ConcatFusion
from polyfuse.heads.classification import ClassificationHead
from polyfuse.training.module import PolyfuseLitModule

WIDTHS = {"image": 6, "audio": 5, "text": 4}


class VectorEncoder(nn.Module):
    """``values (B, D_in) -> Encoded((B, 1, out_dim), present)``."""

    def __init__(self, in_dim: int, out_dim: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.out_dim = out_dim

    def forward(self, inputs: ModalityInput) -> Encoded:
        values = inputs.values
        if inputs.present is not None:  # like polyfuse's encoders: absent samples never reach the weights
            values = torch.where(inputs.present[:, None], values, torch.zeros_like(values))
        return Encoded(self.linear(values), present=inputs.present)


def make_batch(batch: int = 32, seed: int = 0, absent: dict[str, list[int]] | None = None,
               classes: int = 3) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    shared = torch.nn.functional.one_hot(labels, classes).float()
    inputs = {}
    for name, width in WIDTHS.items():
        values = torch.randn(batch, width, generator=generator)
        values[:, :classes] += 2 * shared
        present = torch.ones(batch, dtype=torch.bool)
        for row in (absent or {}).get(name, []):
            present[row] = False
            values[row] = float("nan")
        inputs[name] = ModalityInput(values, present=present)
    return Batch(inputs=inputs, targets={"label": labels})


def make_module(objectives: dict[str, Any] | None = None, modalities: list[str] | None = None,
                fusion: Any = None) -> PolyfuseLitModule:
    torch.manual_seed(0)
    return PolyfuseLitModule(
        encoders={m: VectorEncoder(w) for m, w in WIDTHS.items()},
        fusion=fusion or partial(ConcatFusion, hidden=16),
        head=partial(ClassificationHead, num_classes=3),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        modalities=modalities, fusion_dim=8, scheduler=None, objectives=objectives)

"""CLIP-style contrastive training with a sample-packed text tower under a plain 2-process PyTorch DDP
script (gloo, CPU): each rank packs its own half of the global batch into rows.

Usage: ``python -m tests.encoders.sample_packing_ddp_worker OUT_DIR``. Rank ``r`` holds rows
``r*B:(r+1)*B`` of :func:`global_batch`, takes one step of :class:`Towers` (sample packing on) wrapped in
``DistributedDataParallel`` and records its loss, the parameter gradients after DDP's all-reduce and the
shapes of the packed rows its tower ran. Rank 0 writes ``OUT_DIR/results.pt``; test_sample_packing_ddp.py
compares with one process on the global batch, padded.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from polyfuse.batch import ModalityInput
from polyfuse.encoders import CLIPTextEncoder
from polyfuse.losses import ContrastiveLoss
from tests.distributed.harness import spawn_gloo

WORLD_SIZE, BATCH_PER_RANK, VOCAB, LENGTH, BUDGET = 2, 6, 50, 12, 16


def global_batch() -> tuple[Tensor, Tensor, Tensor]:
    """``(token ids (N, LENGTH), prefix mask, image features (N, 8))``, lengths 1..LENGTH."""
    generator = torch.Generator().manual_seed(5)
    count = WORLD_SIZE * BATCH_PER_RANK
    lengths = torch.randint(1, LENGTH + 1, (count,), generator=generator)
    mask = torch.arange(LENGTH)[None] < lengths[:, None]
    ids = torch.randint(1, VOCAB, (count, LENGTH), generator=generator) * mask
    return ids, mask, torch.randn(count, 8, generator=generator)


class Towers(nn.Module):
    """A causal CLIP text tower (pooled, projected) and a linear image tower, InfoNCE with a learned scale."""

    def __init__(self, sample_packing: Mapping[str, Any] | None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.text = CLIPTextEncoder(vocab_size=VOCAB, context_length=LENGTH, dim=32, depth=2, heads=4, pool="last",
                                    proj_dim=8, sample_packing=sample_packing)
        self.image = nn.Linear(8, 8, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.loss_fn = ContrastiveLoss()

    def forward(self, ids: Tensor, mask: Tensor, features: Tensor) -> Tensor:
        text = F.normalize(self.text(ModalityInput(ids, mask)).pooled(), dim=-1)
        return self.loss_fn(F.normalize(self.image(features), dim=-1), text, self.log_scale.exp())


def run(rank: int, out_dir: str) -> None:
    model = Towers({"budget": BUDGET}).train()
    shapes: list[tuple[int, ...]] = []
    forward_rows = model.text.forward_rows
    model.text.forward_rows = lambda rows: (shapes.append(tuple(rows.input_ids.shape)), forward_rows(rows))[1]
    wrapped = DistributedDataParallel(model)
    ids, mask, features = global_batch()
    rows = slice(rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK)
    loss = wrapped(ids[rows], mask[rows], features[rows])
    loss.backward()
    result = {"loss": float(loss), "rows": shapes,
              "grads": {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}}
    gathered: list[Any] = [None] * WORLD_SIZE
    dist.all_gather_object(gathered, result)
    if rank == 0:
        torch.save(gathered, os.path.join(out_dir, "results.pt"))


if __name__ == "__main__":
    spawn_gloo(run, WORLD_SIZE, sys.argv[1])

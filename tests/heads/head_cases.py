"""Tiny models and batches for the head tests: real encoders and fusions, a few parameters each."""

from __future__ import annotations

from typing import Callable

import torch

from polyfuse.batch import Batch, ModalityInput
from polyfuse.encoders import TextTransformerEncoder, ViTEncoder
from polyfuse.fusion import ConcatFusion, EarlyFusion
from polyfuse.models import MultimodalModel

VOCAB = 20          # ids 0..4 are special: [PAD] [UNK] [CLS] [SEP] [MASK]
PAD, CLS, SEP, MASK = 0, 2, 3, 4


def encoders() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {"image": ViTEncoder(image_size=8, patch_size=4, dim=16, depth=1, heads=2, mlp_ratio=2.0),
            "text": TextTransformerEncoder(vocab_size=VOCAB, max_length=12, dim=16, depth=1, heads=2, mlp_ratio=2.0)}


def text_ids(batch: int, seed: int = 0, duplicate: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[CLS] w ... [SEP] [PAD]...`` token ids with ragged lengths, and their padding mask."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 8, (batch,), generator=g)
    ids = torch.full((batch, 8), PAD)
    for row, length in enumerate(lengths.tolist()):
        ids[row, 0] = CLS
        ids[row, 1:length - 1] = torch.randint(5, VOCAB, (length - 2,), generator=g)
        ids[row, length - 1] = SEP
    if duplicate is not None:
        ids[duplicate[1]] = ids[duplicate[0]]
    return ids, ids != PAD


def batch(size: int = 6, seed: int = 0, present: dict[str, torch.Tensor] | None = None,
          duplicate: tuple[int, int] | None = None, **extras) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids, mask = text_ids(size, seed, duplicate)
    present = present or {}
    inputs = {"image": ModalityInput(torch.randn(size, 1, 8, 8, generator=g), present=present.get("image")),
              "text": ModalityInput(ids, mask, present=present.get("text"))}
    targets = {"label": torch.randint(0, 3, (size,), generator=g)}
    caption, caption_mask = text_ids(size, seed + 1)
    targets["caption_ids"] = caption
    return Batch(inputs, targets, [f"s{i}" for i in range(size)], dict(extras))


def model(head: Callable, fusion: str | None = "early", fusion_dim: int = 16) -> MultimodalModel:
    torch.manual_seed(0)
    factory = {"early": lambda dims, out_dim: EarlyFusion(dims, out_dim, depth=1, heads=2, dropout=0.0),
               "concat": lambda dims, out_dim: ConcatFusion(dims, out_dim, hidden=16, dropout=0.0),
               None: None}[fusion]
    return MultimodalModel(encoders(), factory, head, fusion_dim=fusion_dim)


def assert_all_parameters_get_gradients(module: torch.nn.Module, loss: torch.Tensor,
                                        ignore: tuple[str, ...] = ("missing",)) -> None:
    """Every trainable parameter gets a non-zero gradient (``ignore``: name parts exempted, e.g. the
    fusion's learned missing-modality embeddings, trained only when a modality is absent)."""
    loss.backward()
    missing = [name for name, p in module.named_parameters()
               if p.requires_grad and not any(part in name for part in ignore)
               and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"parameters without gradient: {missing}"

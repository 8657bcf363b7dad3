"""Attention maps of a trained model: encoder self-attention (with rollout) and fusion attention.

* Encoders: every :class:`~polyfuse.encoders.transformer.TransformerBlock` keeps its last
  attention probabilities while :func:`collect_attention` runs (``keep_attention=True``).
  :func:`attention_rollout` combines a stack of them (Abnar & Zuidema, "Quantifying Attention Flow
  in Transformers", ACL 2020): ``R = prod_l (0.5 A_l + 0.5 I)``, heads averaged, rows renormalised.
* Fusions: ``model(batch, return_attention=True)`` returns the fusion's maps by name,
  ``"{query}->{key}/layer{i}"`` (cross-attention, co-attention), ``(B, H, Lq, Lk)``.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor, nn

from polyfuse.batch import Batch
from polyfuse.encoders.transformer import TransformerBlock

__all__ = ["AttentionMaps", "collect_attention", "attention_rollout", "parse_map_name", "query_average"]

_NAME = re.compile(r"^(?P<query>[^/>-]+)->(?P<key>[^/]+)(?:/layer(?P<layer>\d+))?$")


@dataclass
class AttentionMaps:
    """Attention of one forward pass.

    Attributes:
        encoders: modality -> per-block self-attention ``(B, H, L, L)``, input to output order.
        fusion: the fusion's maps by name, ``(B, H, Lq, Lk)``.
        logits: the head's outputs of that pass.
    """

    encoders: dict[str, list[Tensor]] = field(default_factory=dict)
    fusion: dict[str, Tensor] = field(default_factory=dict)
    logits: Tensor | None = None


def _blocks(module: nn.Module) -> list[TransformerBlock]:
    return [m for m in module.modules() if isinstance(m, TransformerBlock)]


@contextmanager
def _keep_attention(encoders: dict[str, nn.Module]) -> Iterator[dict[str, list[TransformerBlock]]]:
    blocks = {name: _blocks(encoder) for name, encoder in encoders.items()}
    previous = {id(b): b.keep_attention for bs in blocks.values() for b in bs}
    for bs in blocks.values():
        for block in bs:
            block.keep_attention = True
    try:
        yield blocks
    finally:
        for bs in blocks.values():
            for block in bs:
                block.keep_attention = previous[id(block)]
                block.last_attention = None


@torch.no_grad()
def collect_attention(model: nn.Module, batch: Batch) -> AttentionMaps:
    """Run ``model`` (a :class:`~polyfuse.models.MultimodalModel`) on ``batch`` in eval mode and
    return every encoder and fusion attention map it computed."""
    was_training = model.training
    model.eval()
    try:
        with _keep_attention(dict(model.encoders.items())) as blocks:
            output = model(batch, return_attention=True)
            encoders = {name: [b.last_attention.detach() for b in bs if b.last_attention is not None]
                        for name, bs in blocks.items()}
    finally:
        model.train(was_training)
    fusion = {name: value.detach() for name, value in (output.attentions or {}).items() if isinstance(value, Tensor)}
    return AttentionMaps(encoders={k: v for k, v in encoders.items() if v}, fusion=fusion, logits=output.outputs)


def attention_rollout(maps: list[Tensor], residual: float = 0.5) -> Tensor:
    """``(B, L, L)`` attention flow through a stack of ``(B, H, L, L)`` maps (heads averaged)."""
    if not maps:
        raise ValueError("attention_rollout needs at least one attention map")
    result = None
    for probs in maps:
        mean = probs.float().mean(dim=1)
        eye = torch.eye(mean.shape[-1], device=mean.device).expand_as(mean)
        step = residual * eye + (1 - residual) * mean
        step = step / step.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        result = step if result is None else step @ result
    return result  # type: ignore[return-value]


def parse_map_name(name: str) -> tuple[str, str, int] | None:
    """``"image->text/layer1"`` -> ``("image", "text", 1)``; None for other names."""
    match = _NAME.match(name)
    if not match:
        return None
    return match["query"], match["key"], int(match["layer"] or 0)


def query_average(probs: Tensor, query_mask: Tensor | None = None) -> Tensor:
    """``(B, H, Lq, Lk) -> (B, Lk)``: attention each key receives, averaged over heads and the real queries."""
    mean = probs.float().mean(dim=1)
    if query_mask is None:
        return mean.mean(dim=1)
    weights = query_mask.float().unsqueeze(-1)
    return (mean * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)

"""Attention maps of a trained model: encoder self-attention (with rollout) and fusion attention.

* Encoders: a transformer encoder (ViT, BERT-style, CLIP text) returns its blocks' probabilities
  from ``encode_with_attention(values, mask)`` (:class:`AttentionEncoder`); nothing is kept on the
  modules. :func:`attention_rollout` combines a stack of them (Abnar & Zuidema, "Quantifying
  Attention Flow in Transformers", ACL 2020): ``R = prod_l (0.5 A_l + 0.5 I)``, heads averaged,
  rows renormalised.
* Fusions: ``model(batch, return_attention=True)`` returns the fusion's maps by name,
  ``"{query}->{key}/layer{i}"`` (cross-attention, co-attention), ``(B, H, Lq, Lk)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from polyfuse.batch import Batch, ModalityInput
from polyfuse.masking import masked_mean

__all__ = ["AttentionEncoder", "AttentionMaps", "collect_attention", "encoder_attention", "attention_rollout",
           "parse_map_name", "query_average"]

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


@runtime_checkable
class AttentionEncoder(Protocol):
    """An encoder that returns its self-attention maps with its tokens."""

    def encode_with_attention(self, values: Tensor, mask: Tensor | None,
                              need_weights: bool = True) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """``(tokens (B, L, D), mask (B, L) | None, per-block probabilities (B, H, L, L))``."""


def encoder_attention(encoder: nn.Module, inputs: ModalityInput) -> list[Tensor]:
    """The per-block self-attention ``(B, H, L, L)`` of ``encoder`` on ``inputs`` (``[]`` for an
    encoder without attention, e.g. the audio CNN)."""
    if not isinstance(encoder, AttentionEncoder):
        return []
    return [probs.detach() for probs in encoder.encode_with_attention(inputs.values, inputs.mask)[2]]


@torch.no_grad()
def collect_attention(model: nn.Module, batch: Batch) -> AttentionMaps:
    """Run ``model`` (a :class:`~polyfuse.models.MultimodalModel`) on ``batch`` in eval mode and
    return every encoder and fusion attention map it computes.

    Fusion maps come back from ``model(batch, return_attention=True)``, encoder maps from each
    encoder's :meth:`~AttentionEncoder.encode_with_attention` on the same inputs.
    """
    was_training = model.training
    model.eval()
    try:
        output = model(batch, return_attention=True)
        encoders = {name: encoder_attention(encoder, batch.inputs[name]) for name, encoder in model.encoders.items()
                    if name in batch.inputs}
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
    return masked_mean(mean, query_mask)

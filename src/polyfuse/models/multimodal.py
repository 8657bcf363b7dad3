"""Composition of encoders, a fusion module and a task head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from torch import nn

from polyfuse.batch import Batch, Encoded
from polyfuse.fusion.base import Fusion, FusionOutput
from polyfuse.heads.base import TaskHead

FusionFactory = Callable[..., Fusion]
HeadFactory = Callable[..., TaskHead]


@dataclass
class ModelOutput:
    """Everything a forward pass produced: per-modality encodings, the fused output, the head's outputs."""

    encoded: dict[str, Encoded]
    fused: FusionOutput
    outputs: Any
    attentions: dict[str, Any] = field(default_factory=dict)


class MultimodalModel(nn.Module):
    """``batch -> encoders -> (modality dropout) -> fusion -> head``.

    Args:
        encoders: modality name -> encoder module (must expose ``out_dim``).
        fusion: a :class:`Fusion`, or a factory called as ``fusion(dims=..., out_dim=fusion_dim)``.
        head: a :class:`TaskHead`, or a factory called as ``head(in_dim=fusion.out_dim)``.
        modalities: which encoders to use (default: all, in the given order); lets one config
            train single-modality baselines (``data.modalities=[image]``).
        fusion_dim: fused width when ``fusion`` is a factory.
        modality_dropout: optional module applied to the encoded dict in training (drops whole
            modalities per sample by setting ``present=False``).
    """

    def __init__(self, encoders: Mapping[str, nn.Module], fusion: Fusion | FusionFactory,
                 head: TaskHead | HeadFactory, modalities: Sequence[str] | None = None,
                 fusion_dim: int = 128, modality_dropout: nn.Module | None = None) -> None:
        super().__init__()
        modalities = list(encoders) if modalities is None else list(modalities)
        missing = [m for m in modalities if m not in encoders]
        if missing:
            raise KeyError(f"no encoder configured for modalities {missing}; configured: {list(encoders)}")
        if not modalities:
            raise ValueError("MultimodalModel needs at least one modality")
        self.modalities = modalities
        self.encoders = nn.ModuleDict({m: encoders[m] for m in modalities})
        dims = {m: int(self.encoders[m].out_dim) for m in modalities}
        self.fusion = fusion if isinstance(fusion, nn.Module) else fusion(dims=dims, out_dim=fusion_dim)
        self.head = head if isinstance(head, nn.Module) else head(in_dim=self.fusion.out_dim)
        self.modality_dropout = modality_dropout

    def encode(self, batch: Batch) -> dict[str, Encoded]:
        missing = [m for m in self.modalities if m not in batch.inputs]
        if missing:
            raise KeyError(f"batch has no input for modalities {missing}; it has {batch.modalities}")
        return {m: self.encoders[m](batch.inputs[m]) for m in self.modalities}

    def forward(self, batch: Batch, return_attention: bool = False) -> ModelOutput:
        encoded = self.encode(batch)
        if self.modality_dropout is not None and self.training:
            encoded = self.modality_dropout(encoded)
        fused = self.fusion(encoded, return_attention=return_attention)
        outputs = self.head(fused, batch)
        return ModelOutput(encoded=encoded, fused=fused, outputs=outputs, attentions=dict(fused.attentions))

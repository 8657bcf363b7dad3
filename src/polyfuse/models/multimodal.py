"""Composition of encoders, a fusion module and a task head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from torch import nn

from polyfuse.batch import Batch, Encoded, ModalityInput
from polyfuse.encoders.base import Encoder
from polyfuse.fusion.base import Fusion, FusionOutput
from polyfuse.heads.base import HeadContext, TaskHead

FusionFactory = Callable[..., Fusion]
HeadFactory = Callable[..., TaskHead]


@dataclass
class ModelOutput:
    """Everything a forward pass produced: per-modality encodings, the fused output (``None`` without a
    fusion), the head's outputs."""

    encoded: dict[str, Encoded]
    fused: FusionOutput | None
    outputs: Any
    attentions: dict[str, Any] = field(default_factory=dict)


class MultimodalModel(nn.Module):
    """``batch -> encoders -> (modality dropout) -> fusion -> head``.

    The head receives ``(fused, batch, HeadContext)``: the context carries the per-modality
    encodings and the model's ``encode``/``fuse`` callables, for objectives that embed modalities
    separately (contrastive retrieval), re-encode a corrupted input (MLM) or fuse mismatched pairs
    (ITM).

    Args:
        encoders: modality name -> encoder module (must expose ``out_dim``).
        fusion: a :class:`Fusion`, a factory called as ``fusion(dims=..., out_dim=fusion_dim)``, or
            ``None`` for dual-stream models whose head works on the encodings alone.
        head: a :class:`TaskHead`, or a factory called as ``head(in_dim=fusion.out_dim, dims=dims)``
            (``in_dim=None`` without a fusion; ``dims``: modality -> encoder width).
        modalities: which encoders to use (default: all, in the given order); lets one config
            train single-modality baselines (``data.modalities=[image]``).
        fusion_dim: fused width when ``fusion`` is a factory.
        modality_dropout: optional module applied to the encoded dict in training (drops whole
            modalities per sample by setting ``present=False``).
    """

    def __init__(self, encoders: Mapping[str, nn.Module], fusion: Fusion | FusionFactory | None,
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
        for name, encoder in self.encoders.items():
            if isinstance(encoder, Encoder):
                encoder.modality = name  # errors name the modality (e.g. a mask packing cannot take)
        dims = {m: int(self.encoders[m].out_dim) for m in modalities}
        if fusion is None or isinstance(fusion, nn.Module):
            self.fusion = fusion
        else:
            self.fusion = fusion(dims=dims, out_dim=fusion_dim)
        in_dim = None if self.fusion is None else self.fusion.out_dim
        self.head = head if isinstance(head, nn.Module) else head(in_dim=in_dim, dims=dims)
        self.modality_dropout = modality_dropout

    def encode(self, batch: Batch) -> dict[str, Encoded]:
        missing = [m for m in self.modalities if m not in batch.inputs]
        if missing:
            raise KeyError(f"batch has no input for modalities {missing}; it has {batch.modalities}")
        return {m: self.encoders[m](batch.inputs[m]) for m in self.modalities}

    def encode_modality(self, modality: str, inputs: ModalityInput) -> Encoded:
        """Encode one input with the encoder of ``modality``."""
        if modality not in self.encoders:
            raise KeyError(f"no encoder for modality {modality!r}; configured: {self.modalities}")
        return self.encoders[modality](inputs)

    def forward(self, batch: Batch, return_attention: bool = False) -> ModelOutput:
        encoded = self.encode(batch)
        if self.modality_dropout is not None and self.training:
            encoded = self.modality_dropout(encoded)
        fused = None if self.fusion is None else self.fusion(encoded, return_attention=return_attention)
        context = HeadContext(encoded=encoded, encode=self.encode, encode_modality=self.encode_modality,
                              fuse=self.fusion)
        outputs = self.head(fused, batch, context)
        attentions = {} if fused is None else dict(fused.attentions)
        return ModelOutput(encoded=encoded, fused=fused, outputs=outputs, attentions=attentions)

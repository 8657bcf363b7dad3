"""The batch contract shared by every part of polyfuse.

Data flows one way: samples -> :class:`Batch` (raw inputs per modality) -> encoders ->
:class:`Encoded` (tokens per modality) -> fusion -> head.

Two masks travel with every modality:

* ``mask: (B, L) bool`` -- padding mask, ``True`` marks a real token/frame, ``False`` padding.
  ``None`` means every position is real.
* ``present: (B,) bool`` -- ``True`` when the sample has this modality at all. ``False`` means the
  modality is absent for that sample and its values are garbage that no module may depend on.
  ``None`` means present for every sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

from polyfuse.masking import masked_mean

__all__ = ["Encoded", "ModalityInput", "Batch", "full_mask", "full_present"]


def full_mask(tokens: Tensor) -> Tensor:
    """An all-``True`` padding mask ``(B, L)`` for ``tokens: (B, L, ...)``."""
    return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


def full_present(batch_size: int, device: torch.device | str | None = None) -> Tensor:
    """An all-``True`` presence vector ``(B,)``."""
    return torch.ones(batch_size, dtype=torch.bool, device=device)


def _check_bool(name: str, value: Tensor | None, shape: tuple[int, ...], owner: str) -> None:
    if value is None:
        return
    if value.dtype != torch.bool:
        raise TypeError(f"{owner}.{name} must be a bool tensor (True = real/present), got {value.dtype}")
    if tuple(value.shape) != shape:
        raise ValueError(f"{owner}.{name} must have shape {shape}, got {tuple(value.shape)}")


@dataclass
class Encoded:
    """Output of an encoder for one modality: what every fusion module consumes.

    Attributes:
        tokens: ``(B, L, D)`` token features (``L = 1`` for a pooled vector).
        mask: ``(B, L)`` bool padding mask, ``True`` = real token; ``None`` = all real.
        present: ``(B,)`` bool, ``True`` = the sample has this modality; ``None`` = all present.
    """

    tokens: Tensor
    mask: Tensor | None = None
    present: Tensor | None = None

    def __post_init__(self) -> None:
        if self.tokens.dim() == 2:  # a pooled (B, D) vector is a sequence of one token
            self.tokens = self.tokens.unsqueeze(1)
        if self.tokens.dim() != 3:
            raise ValueError(f"Encoded.tokens must be (B, L, D) or (B, D), got shape {tuple(self.tokens.shape)}")
        batch, length = self.tokens.shape[:2]
        _check_bool("mask", self.mask, (batch, length), "Encoded")
        _check_bool("present", self.present, (batch,), "Encoded")

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def dim(self) -> int:
        return self.tokens.shape[-1]

    def mask_or_full(self) -> Tensor:
        """The padding mask, materialised (all ``True`` when ``mask is None``)."""
        return full_mask(self.tokens) if self.mask is None else self.mask

    def present_or_full(self) -> Tensor:
        """The presence vector, materialised (all ``True`` when ``present is None``)."""
        return full_present(self.batch_size, self.tokens.device) if self.present is None else self.present

    def valid_mask(self) -> Tensor:
        """``(B, L)``: a token counts only if it is real *and* its modality is present."""
        return self.mask_or_full() & self.present_or_full()[:, None]

    def pooled(self) -> Tensor:
        """Masked mean over valid tokens, ``(B, D)``; zeros for samples without valid tokens."""
        return masked_mean(self.tokens, self.valid_mask())


@dataclass
class ModalityInput:
    """Raw input of one modality for a batch, as produced by the collate function.

    Attributes:
        values: images ``(B, C, H, W)``, token ids ``(B, L)``, waveforms ``(B, T)`` or video clips
            ``(B, T, C, H, W)``.
        mask: ``(B, L)``/``(B, T)`` bool padding mask for sequences (``True`` = real), for video the
            frame mask (``False`` = a padding frame of a clip shorter than ``T``); ``None`` for
            fixed-size inputs such as images.
        present: ``(B,)`` bool, ``False`` where the sample lacks this modality.
    """

    values: Tensor
    mask: Tensor | None = None
    present: Tensor | None = None

    def __post_init__(self) -> None:
        batch = self.values.shape[0]
        if self.mask is not None:
            _check_bool("mask", self.mask, tuple(self.values.shape[:2]), "ModalityInput")
        _check_bool("present", self.present, (batch,), "ModalityInput")

    def present_or_full(self) -> Tensor:
        return full_present(self.values.shape[0], self.values.device) if self.present is None else self.present


@dataclass
class Batch:
    """A collated multimodal batch.

    Attributes:
        inputs: modality name -> :class:`ModalityInput`.
        targets: target name -> tensor (e.g. ``"label": (B,)`` class indices).
        ids: sample identifiers, length ``B``.
        extras: anything else a task needs (raw strings such as captions or answers).
        valid: ``(B,)`` bool, ``False`` for a placeholder row standing in for a sample that could not
            be read (:class:`~polyfuse.data.collate.MultimodalCollate` keeps the batch size equal on
            every DDP rank instead of dropping it); ``None`` = every row is valid. A placeholder row
            has every modality absent (``present=False``) and zero targets; losses and metrics
            leave it out (:mod:`polyfuse.losses.masking`). ``batch_size`` counts it.
    """

    inputs: dict[str, ModalityInput]
    targets: dict[str, Tensor] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    valid: Tensor | None = None

    def __post_init__(self) -> None:
        if self.valid is not None:
            _check_bool("valid", self.valid, (self.batch_size,), "Batch")

    @property
    def batch_size(self) -> int:
        if self.inputs:
            return next(iter(self.inputs.values())).values.shape[0]
        return len(self.ids)

    @property
    def modalities(self) -> list[str]:
        return list(self.inputs)

    def to(self, device: torch.device | str) -> "Batch":
        """A copy with every tensor moved to ``device``."""
        def move(value: Any) -> Any:
            if isinstance(value, Tensor):
                return value.to(device, non_blocking=True)
            if isinstance(value, ModalityInput):
                return replace(value, **{f.name: move(getattr(value, f.name)) for f in fields(value)})
            if isinstance(value, dict):
                return {key: move(item) for key, item in value.items()}
            return value

        return Batch(move(self.inputs), move(self.targets), list(self.ids), move(self.extras), move(self.valid))

    def valid_or_full(self) -> Tensor:
        """The validity flags, materialised (all ``True`` when ``valid is None``)."""
        if self.valid is not None:
            return self.valid
        device = next(iter(self.inputs.values())).values.device if self.inputs else None
        return full_present(self.batch_size, device)

    @property
    def num_valid(self) -> int:
        """Rows that hold a real sample (``batch_size`` minus placeholders)."""
        return self.batch_size if self.valid is None else int(self.valid.sum())

"""Collate samples (dicts) into a :class:`~polyfuse.batch.Batch` with padding masks and presence."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from polyfuse.batch import Batch, ModalityInput
from polyfuse.data.errors import BAD_SAMPLES_KEY, BadSample


#: dtype of a modality absent from a whole batch (a batch of placeholders): text is token ids
FALLBACK_DTYPES = {"text": "int64"}


@dataclass
class MultimodalCollate:
    """Build a :class:`Batch` from samples ``{"id": str, <modality>: Tensor | None, <target>: ...}``.

    * 1-D modality values (token ids ``(L,)``, waveforms ``(T,)``) are right-padded to the longest
      in the batch with ``pad_values[modality]`` (default 0) and get a ``(B, L)`` mask.
    * N-D values (images ``(C, H, W)``) are stacked and must share a shape, except those of the
      ``frame_modalities`` (video clips ``(T, C, H, W)``), which are padded along time to the
      longest clip with zeros and get a ``(B, T)`` frame mask.
    * A sample whose modality is ``None`` (or missing from the dict) is absent: ``present=False``,
      zeros in its slot, an all-``False`` mask row.
    * A sample that is a :class:`~polyfuse.data.errors.BadSample` marker (or ``None``) becomes a
      placeholder row, so the batch keeps its size (DDP ranks gather equal shapes): every modality
      absent, targets zero of the right shape and dtype, extras ``None``, and ``False`` in
      ``batch.valid`` (``None`` when every row is valid); losses and metrics leave such rows out.
      The markers travel to the main process in ``batch.extras["bad_samples"]``, where the
      loader's :class:`~polyfuse.data.errors.BadSampleTracker` counts them. A batch whose samples
      are all bad is a batch of placeholders (never empty): fixed-size modalities take their shape
      from ``shapes``, tensor targets theirs from ``target_shapes`` / ``target_dtypes``.
    * Targets that are tensors (e.g. soft VQA scores ``(A,)``) are stacked.

    Args:
        modalities: names of the modality keys.
        targets: names of target keys turned into tensors (ints -> int64, floats -> float32).
        pad_values: padding value per sequence modality (e.g. the tokenizer's pad id).
        shapes: fallback shape per modality, used when it is absent from the whole batch (e.g. a
            batch of placeholders): ``(C, H, W)`` for images; ``(T,)`` for a sequence modality is its
            padded length then (an audio encoder needs a few frames: ``{"audio": [max_samples]}``),
            else a sequence absent from the whole batch has length 1.
        pad_to: minimum padded length per sequence modality (e.g. ``{"audio": 160000}`` for fixed
            shapes); masks still mark only the real positions.
        target_shapes: per-sample shape of each tensor target (``{"scores": [A]}``), used only when
            every sample of a batch is bad; a target not listed is a scalar (``()``).
        target_dtypes: dtype name per target for that case (default ``"int64"`` for scalars,
            ``"float32"`` otherwise; token-id targets need ``"int64"``).
        dtypes: dtype name per modality absent from the whole batch (default: ``int64`` token ids
            for ``text``, ``float32`` for the rest).
        frame_modalities: modalities whose values are sequences of frames ``(T, ...)``, padded like
            1-D sequences; their ``shapes`` entry is ``(T, ...)`` (``T``: the padded length of a batch
            without them).
    """

    modalities: Sequence[str]
    targets: Sequence[str] = ("label",)
    pad_values: Mapping[str, float] = field(default_factory=dict)
    shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    pad_to: Mapping[str, int] = field(default_factory=dict)
    target_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    target_dtypes: Mapping[str, str] = field(default_factory=dict)
    dtypes: Mapping[str, str] = field(default_factory=lambda: dict(FALLBACK_DTYPES))
    frame_modalities: Sequence[str] = ("video",)

    def __call__(self, samples: Sequence[Mapping[str, Any] | BadSample | None]) -> Batch:
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        bad = [s if isinstance(s, BadSample) else BadSample("?", "?", "sample is None") for s in samples
               if s is None or isinstance(s, BadSample)]
        if not bad:
            return self._collate(samples)
        good = [s for s in samples if s is not None and not isinstance(s, BadSample)]
        markers = iter(bad)
        rows = [s if s is not None and not isinstance(s, BadSample) else self._placeholder(next(markers), good)
                for s in samples]
        batch = self._collate(rows)
        batch.valid = torch.tensor([s is not None and not isinstance(s, BadSample) for s in samples])
        batch.extras[BAD_SAMPLES_KEY] = bad
        return batch

    def _placeholder(self, marker: BadSample, good: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The row standing in for a bad sample: no modality, zero targets shaped like the good ones'."""
        row: dict[str, Any] = {"id": marker.id, **{name: None for name in self.modalities}}
        for name in self.targets:
            example = next((s[name] for s in good if s.get(name) is not None), None)
            if isinstance(example, Tensor):
                row[name] = torch.zeros_like(example)
            elif example is not None:
                row[name] = type(example)(0)
            else:
                shape = tuple(self.target_shapes.get(name, ()))
                dtype = self.target_dtypes.get(name, "int64" if not shape else "float32")
                row[name] = torch.zeros(shape, dtype=getattr(torch, dtype))
        return row

    def _collate(self, samples: Sequence[Mapping[str, Any]]) -> Batch:
        inputs = {name: self._collate_modality(name, [s.get(name) for s in samples]) for name in self.modalities}
        targets = {}
        for name in self.targets:
            values = [s.get(name) for s in samples]
            if any(v is None for v in values):
                missing = [str(s.get("id", i)) for i, (s, v) in enumerate(zip(samples, values)) if v is None]
                raise KeyError(f"target {name!r} missing for samples {missing[:5]}")
            targets[name] = torch.stack(values) if isinstance(values[0], Tensor) and values[0].dim() else torch.as_tensor(values)
        reserved = set(self.modalities) | set(self.targets) | {"id"}
        extras: dict[str, list[Any]] = {}
        for sample in samples:
            for key in sample:
                if key not in reserved:
                    extras.setdefault(key, [])
        for key in extras:
            extras[key] = [s.get(key) for s in samples]
        ids = [str(s.get("id", i)) for i, s in enumerate(samples)]
        return Batch(inputs=inputs, targets=targets, ids=ids, extras=extras)

    def _collate_modality(self, name: str, values: list[Tensor | None]) -> ModalityInput:
        present = torch.tensor([v is not None for v in values], dtype=torch.bool)
        real = [v for v in values if v is not None]
        if real and (real[0].dim() == 1 or name in self.frame_modalities):
            return self._pad_sequences(name, values, present)
        if not real and name in self.frame_modalities and name in self.shapes:
            return self._pad_sequences(name, values, present, minimum=int(self.shapes[name][0]))
        if real:
            shape = tuple(real[0].shape)
            dtype = real[0].dtype
            for value in real:
                if tuple(value.shape) != shape:
                    raise ValueError(f"modality {name!r}: cannot stack shapes {shape} and {tuple(value.shape)}; "
                                     "resize in the dataset transform")
        elif name in self.shapes and len(self.shapes[name]) == 1:
            # a sequence modality absent from the whole batch: padding of its fallback length
            return self._pad_sequences(name, values, present, minimum=int(self.shapes[name][0]))
        elif name in self.shapes:
            shape, dtype = tuple(self.shapes[name]), getattr(torch, self.dtypes.get(name, "float32"))
        else:
            # absent from the whole batch: a length-1 padded sequence keeps shapes valid
            return self._pad_sequences(name, values, present)
        rows = [v if v is not None else torch.zeros(shape, dtype=dtype) for v in values]
        stacked = torch.stack(rows, out=_new_batch_tensor((len(rows), *shape), dtype))
        return ModalityInput(values=stacked, mask=None, present=present)

    def _pad_sequences(self, name: str, values: list[Tensor | None], present: Tensor,
                       minimum: int = 1) -> ModalityInput:
        lengths = [0 if v is None else v.shape[0] for v in values]
        real = [v for v in values if v is not None]
        dtype = real[0].dtype if real else getattr(torch, self.dtypes.get(name, "float32"))
        frame = tuple(real[0].shape[1:]) if real else tuple(self.shapes.get(name, (0,))[1:])
        for value in real:
            if tuple(value.shape[1:]) != frame:
                raise ValueError(f"modality {name!r}: cannot pad frames of shapes {frame} and "
                                 f"{tuple(value.shape[1:])} into one batch; resize in the dataset transform")
        longest = max(max(lengths), minimum, self.pad_to.get(name, 0))
        pad = self.pad_values.get(name, 0)
        padded = _new_batch_tensor((len(values), longest, *frame), dtype).fill_(pad)
        mask = torch.zeros(len(values), longest, dtype=torch.bool)
        for row, (value, length) in enumerate(zip(values, lengths)):
            if value is not None and length:
                padded[row, :length] = value
                mask[row, :length] = True
        return ModalityInput(values=padded, mask=mask, present=present)


def _new_batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialised tensor; inside a DataLoader worker its storage is shared memory, so handing
    the batch to the main process needs no extra copy (what ``torch``'s ``default_collate`` does)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).new(storage).resize_(shape)

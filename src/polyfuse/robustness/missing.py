"""Missing modalities: which subsets to drop, and dropping them from a batch's encodings."""

from __future__ import annotations

from dataclasses import replace
from itertools import combinations
from typing import Mapping, Sequence

from torch import Tensor

from polyfuse.batch import Encoded

__all__ = ["modality_subsets", "drop_modalities", "subset_name"]


def modality_subsets(modalities: Sequence[str], mode: str = "all") -> list[tuple[str, ...]]:
    """Subsets of ``modalities`` to drop: ``"single"`` (each modality alone) or ``"all"`` (every
    non-empty subset, the full set included: at rate 1 nothing is left, the chance baseline)."""
    if mode == "single":
        return [(m,) for m in modalities]
    if mode == "all":
        return [subset for size in range(1, len(modalities) + 1) for subset in combinations(modalities, size)]
    raise ValueError(f"modality subset mode must be 'single' or 'all', got {mode!r}")


def subset_name(subset: Sequence[str]) -> str:
    """``("image", "audio") -> "image+audio"``."""
    return "+".join(subset)


def drop_modalities(encoded: Mapping[str, Encoded], subset: Sequence[str], drop: Tensor) -> dict[str, Encoded]:
    """Mark every modality of ``subset`` absent for the samples where ``drop: (B,) bool`` is True.

    Only ``present`` changes: per the batch contract no module may read an absent modality's
    tokens, so this equals feeding the batch with those inputs missing.
    """
    unknown = [m for m in subset if m not in encoded]
    if unknown:
        raise KeyError(f"cannot drop modalities {unknown}: the model encodes {list(encoded)}")
    return {name: replace(value, present=value.present_or_full() & ~drop.to(value.tokens.device))
            if name in subset else value for name, value in encoded.items()}

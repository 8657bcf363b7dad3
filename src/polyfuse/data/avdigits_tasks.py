"""AV-digits interaction tasks: which kind of multimodal information the label needs.

The partial information decomposition (Williams & Beer, 2010; for multimodal learning Liang et
al., "Quantifying & Modeling Multimodal Interactions", NeurIPS 2023) splits what two modalities
tell about a label into *redundant*, *unique* and *synergistic* parts. Each task below pairs a
written digit ``a`` (an image record) with a spoken digit ``b`` (an audio record) of the same split,
so no image or voice crosses splits, and defines the label from ``(a, b)``:

* ``redundant`` -- today's samples (each record's own image and voice, ``a == b``), label ``a``.
* ``unique`` -- label ``2a + (b mod 2)`` (20 classes): the written digit only the image tells,
  the spoken parity only the audio tells.
* ``synergy`` -- label ``(a + b) mod 10``: given either digit alone the label is exactly uniform.
* ``mixed`` (16 classes) -- ``a`` and ``b`` share their parity (redundant bit, told by either);
  ``a >= 5`` only the image tells, ``b >= 5`` only the audio tells; whether exactly one of the
  two is a multiple of 3 only the pair tells (XOR). Label ``8 p + 4 [a>=5] + 2 [b>=5] + s``.

Pairs are drawn in exact proportion to a digit-pair weight table ``W[a, b]`` (``m`` copies of
each unit, ``m`` chosen so the split keeps about its record count), so the claimed conditional
distributions hold exactly in the sample list, not only in expectation. The images of digit
``a`` are dealt to the pairs from a seeded permutation (cycled when a digit needs more), the
same for voices; the whole construction is a pure function of the metadata and ``seed``.

The text modality is not defined for the paired tasks (a hint describes one record's digit);
``redundant`` keeps it, as today.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["InteractionTask", "INTERACTION_TASKS", "get_task", "pair_records", "mixed_weights"]

DIGITS = 10


def _parity(d: int) -> int:
    return d % 2


def _high(d: int) -> int:
    return int(d >= 5)


def _third(d: int) -> int:
    return int(d % 3 == 0)


def mixed_weights() -> np.ndarray:
    """``W[a, b]`` (integers, sum 128) of the ``mixed`` task.

    Bits ``r`` (shared parity), ``u = [a >= 5]``, ``x = [3 | a]``, ``w = [b >= 5]``, ``y = [3 | b]``
    are independent fair coins; ``a`` is uniform among the digits with bits ``(r, u, x)`` and ``b``
    among those with ``(r, w, y)``, so ``P(a, b) = 1 / (32 |G(a)| |G(b)|)`` when their parities agree.
    """
    group = {d: (_parity(d), _high(d), _third(d)) for d in range(DIGITS)}
    size = {key: sum(1 for g in group.values() if g == key) for key in set(group.values())}
    weights = np.zeros((DIGITS, DIGITS), dtype=np.int64)
    for a in range(DIGITS):
        for b in range(DIGITS):
            if _parity(a) == _parity(b):
                weights[a, b] = 4 // (size[group[a]] * size[group[b]])
    return weights


@dataclass(frozen=True)
class InteractionTask:
    """A label defined from the written digit ``a`` and the spoken digit ``b``.

    ``weights`` is the digit-pair table the pairs follow (``None``: each record's own pair).
    """

    name: str
    num_classes: int
    label: Callable[[int, int], int]
    weights: np.ndarray | None
    text: bool  # whether the text modality (the record's hint) is defined


INTERACTION_TASKS: dict[str, InteractionTask] = {
    "redundant": InteractionTask("redundant", 10, lambda a, b: a, None, text=True),
    "unique": InteractionTask("unique", 20, lambda a, b: 2 * a + _parity(b),
                              np.ones((DIGITS, DIGITS), dtype=np.int64), text=False),
    "synergy": InteractionTask("synergy", 10, lambda a, b: (a + b) % 10,
                               np.ones((DIGITS, DIGITS), dtype=np.int64), text=False),
    "mixed": InteractionTask("mixed", 16, lambda a, b: 8 * _parity(a) + 4 * _high(a) + 2 * _high(b)
                             + (_third(a) ^ _third(b)), mixed_weights(), text=False),
}


def get_task(name: str) -> InteractionTask:
    if name not in INTERACTION_TASKS:
        raise ValueError(f"unknown AV-digits interaction task {name!r}; valid: {', '.join(INTERACTION_TASKS)}")
    return INTERACTION_TASKS[name]


def pair_records(records: Sequence[dict[str, Any]], task: str, seed: int = 0) -> list[tuple[int, int, int]]:
    """``(image record index, audio record index, label)`` for every sample of ``task``.

    ``records`` are one split's metadata records (``label`` is the record's digit). The sample
    count is ``m * W.sum()`` with ``m = max(1, round(len(records) / W.sum()))``.
    """
    spec = get_task(task)
    digits = [int(r["label"]) for r in records]
    if spec.weights is None:
        return [(i, i, spec.label(d, d)) for i, d in enumerate(digits)]
    rng = np.random.default_rng(seed)
    by_digit = {d: np.flatnonzero(np.asarray(digits) == d) for d in range(DIGITS)}
    copies = max(1, round(len(records) / int(spec.weights.sum())))
    counts = copies * spec.weights
    needed = [d for d in range(DIGITS) if counts[d].sum() + counts[:, d].sum() > 0 and not len(by_digit[d])]
    if needed:
        raise ValueError(f"AV-digits task {task!r} needs digits {needed}, which this split has no record of")
    images = {a: np.resize(rng.permutation(by_digit[a]), counts[a].sum()) for a in range(DIGITS)}
    voices = {b: np.resize(rng.permutation(by_digit[b]), counts[:, b].sum()) for b in range(DIGITS)}
    used_images = {a: 0 for a in range(DIGITS)}
    used_voices = {b: 0 for b in range(DIGITS)}
    pairs = []
    for a in range(DIGITS):
        for b in range(DIGITS):
            for _ in range(int(counts[a, b])):
                pairs.append((int(images[a][used_images[a]]), int(voices[b][used_voices[b]]), spec.label(a, b)))
                used_images[a] += 1
                used_voices[b] += 1
    return pairs

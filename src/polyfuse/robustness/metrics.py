"""Robustness summaries as defined by MultiBench (Liang et al., 2021, "MultiBench: Multiscale
Benchmarks for Multimodal Representation Learning", Sec. 3 and ``eval_scripts/robustness.py``).

* **relative robustness**: the area under the performance-vs-imperfection curve, imperfection
  levels in ``[0, 1]`` (trapezoid rule). An unaffected method scores its clean accuracy.
* **effective robustness**: how much better a method holds up than a reference (late fusion in
  MultiBench) once both curves start at the same clean accuracy:
  ``sum_i f_i - (ref_i + f_0 - ref_0)`` over the levels ``i``. Positive: degrades more slowly than
  the reference. As in MultiBench it is a sum over levels, so compare it at equal level grids.

MultiBench reports both min-max normalised across the compared methods
(:func:`minmax_normalise`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

__all__ = ["relative_robustness", "effective_robustness", "minmax_normalise"]


def _check(levels: Sequence[float], values: Sequence[float]) -> None:
    if len(levels) != len(values) or len(levels) < 2:
        raise ValueError(f"need >= 2 (level, value) pairs of equal length, got {len(levels)} levels and "
                         f"{len(values)} values")
    if any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels must increase strictly, got {list(levels)}")


def relative_robustness(levels: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area under ``values`` over ``levels`` (MultiBench's relative robustness)."""
    _check(levels, values)
    return float(sum((b - a) * (fa + fb) / 2 for a, b, fa, fb in zip(levels, levels[1:], values, values[1:])))


def effective_robustness(values: Sequence[float], reference: Sequence[float]) -> float:
    """``sum_i values_i - (reference_i + values_0 - reference_0)`` (MultiBench's effective robustness)."""
    if len(values) != len(reference) or not values:
        raise ValueError(f"values and reference must be equally long and non-empty, got {len(values)} and "
                         f"{len(reference)}")
    shift = values[0] - reference[0]
    return float(sum(v - (r + shift) for v, r in zip(values, reference)))


def minmax_normalise(scores: Mapping[str, float]) -> dict[str, float]:
    """Scale scores to ``[0, 1]`` across methods (all 1.0 when they are equal)."""
    low, high = min(scores.values()), max(scores.values())
    if high == low:
        return {name: 1.0 for name in scores}
    return {name: (value - low) / (high - low) for name, value in scores.items()}

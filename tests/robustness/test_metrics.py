"""MultiBench's relative and effective robustness on hand-computable curves."""

from __future__ import annotations

import pandas as pd
import pytest

from polyfuse.robustness import effective_robustness, minmax_normalise, relative_robustness
from polyfuse.robustness.summary import summarise

LEVELS = [0.0, 0.25, 0.5, 0.75, 1.0]


def test_relative_robustness_is_the_area_under_the_curve():
    assert relative_robustness(LEVELS, [0.8] * 5) == pytest.approx(0.8)
    assert relative_robustness(LEVELS, [1.0, 0.75, 0.5, 0.25, 0.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="increase"):
        relative_robustness([0.0, 0.5, 0.5], [1, 1, 1])


def test_effective_robustness_compares_against_the_shifted_reference():
    late = [0.9, 0.8, 0.6, 0.4, 0.2]
    assert effective_robustness(late, late) == 0.0
    assert effective_robustness([v - 0.1 for v in late], late) == pytest.approx(0.0)  # same shape, lower start
    flatter = [0.9, 0.85, 0.8, 0.75, 0.7]
    assert effective_robustness(flatter, late) == pytest.approx(0.05 + 0.2 + 0.35 + 0.5)


def test_minmax_normalise():
    assert minmax_normalise({"a": 1.0, "b": 3.0, "c": 2.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert minmax_normalise({"a": 2.0, "b": 2.0}) == {"a": 1.0, "b": 1.0}


def test_summarise_table():
    records = pd.DataFrame(
        [{"fusion": "late", "perturbation": "missing:audio", "level": lv, "acc": 1 - lv} for lv in LEVELS]
        + [{"fusion": "concat", "perturbation": "missing:audio", "level": lv, "acc": 1 - lv / 2} for lv in LEVELS])
    reference = records[records["fusion"] == "late"]
    table = summarise(records, "acc", group=["fusion"], reference=reference).set_index("fusion")
    assert table.loc["concat", "clean"] == 1.0 and table.loc["concat", "worst"] == 0.5
    assert table.loc["concat", "relative_robustness"] == pytest.approx(0.75)
    assert table.loc["late", "effective_robustness"] == 0.0
    assert table.loc["concat", "effective_robustness"] == pytest.approx(sum(lv / 2 for lv in LEVELS))

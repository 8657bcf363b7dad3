"""``model.head.sample_packing`` trains the AV-digits captioning experiment exactly as the padded head:
two steps give the same per-step losses with sample packing off and on (docs/packing.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyfuse.heads.decoder import CaptionDecoder

from ..cli.run_factory import compose_config
from ..encoders.test_packing_training import EXPERIMENTS, step_losses

CAPTIONING, _ = EXPERIMENTS["captioning"]  # dropout off (its masks differ by layout), image + text
SAMPLE_PACKING = "model.head.sample_packing={budget:64,strategy:ffd}"
FORWARD_ROWS = CaptionDecoder.forward_rows


def test_the_switch_is_off_by_default_and_reaches_the_head():
    assert compose_config("train", ["experiment=avdigits_captioning"]).model.head.sample_packing is None
    cfg = compose_config("train", ["experiment=avdigits_captioning", SAMPLE_PACKING])
    assert dict(cfg.model.head.sample_packing) == {"budget": 64, "strategy": "ffd"}


@pytest.mark.slow
def test_sample_packed_training_gives_the_padded_losses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    widths: list[int] = []

    def spy(self, rows, *args):
        widths.append(int(rows.input_ids.shape[1]))
        return FORWARD_ROWS(self, rows, *args)

    monkeypatch.setattr(CaptionDecoder, "forward_rows", spy)
    padded, _ = step_losses(CAPTIONING, tmp_path / "padded", monkeypatch)
    assert widths == []
    packed, _ = step_losses([*CAPTIONING, SAMPLE_PACKING], tmp_path / "packed", monkeypatch)
    assert widths == [64, 64]  # both training steps ran on packed rows of the budget
    assert len(padded) == 2 and len(packed) == 2
    assert max(abs(a - b) for a, b in zip(padded, packed)) <= 1e-5, (padded, packed)

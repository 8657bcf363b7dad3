"""``model.packing=true`` reaches the modules that support it and trains exactly as the padded model:
two steps of the small AV-digits text experiment (BERT-style encoder) and of captioning (packed
teacher forcing) give the same per-step losses. So does sample packing in the text tower
(``model.encoders.text.sample_packing``): the BERT-style text experiment and CLIP pre-training."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hydra.utils import instantiate

from polyfuse.attention.varlen import Packing
from polyfuse.encoders import TextTransformerEncoder
from polyfuse.encoders.transformer import TransformerEncoder

from ..cli.run_factory import TINY, compose_config

NO_DROPOUT = ["model.encoders.text.dropout=0.0", "model.head.dropout=0.0"]  # dropout masks differ by layout
STEPS = ["trainer.limit_val_batches=0", "test=false", "trainer.log_every_n_steps=1", "attention_backend=sdpa"]
EXPERIMENTS = {  # the overrides, and the inputs that must run packed
    "text": (["experiment=avdigits_text", *NO_DROPOUT], {"text"}),
    "captioning": (["experiment=avdigits_captioning", "data.modalities=[image,text]", "model.fusion.dropout=0.0", *NO_DROPOUT],
                   {"text", "caption_ids"}),
}
FROM_MASK = Packing.from_mask.__func__
SAMPLE_PACKED = {  # sample packing in the text tower: the overrides (the tower's dropout is 0 in both)
    "text": ["experiment=avdigits_text", *NO_DROPOUT],
    "clip_pretrain": ["experiment=clip_pretrain_avdigits", "data.batch_size=16"],
}


def step_losses(overrides: list[str], run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[float], set[str]]:
    """The per-step training losses of a tiny run, and the names of the inputs it packed."""
    from polyfuse.cli.train import train

    packed: set[str] = set()

    def spy(cls, mask, name="tokens"):
        packed.add(name)
        return FROM_MASK(cls, mask, name)

    monkeypatch.setattr(Packing, "from_mask", classmethod(spy))
    train(compose_config("train", [*TINY, *overrides, *STEPS], run_dir))
    rows = csv.DictReader(open(run_dir / "csv" / "metrics.csv"))
    return [float(row["train/loss_step"]) for row in rows if row.get("train/loss_step")], packed


def test_the_switch_reaches_encoders_and_heads():
    cfg = compose_config("train", ["experiment=avdigits_captioning", "model.packing=true"])
    assert cfg.model.encoders.text.packing is True and cfg.model.head.packing is True
    encoder = instantiate(cfg.model.encoders.text)
    assert isinstance(encoder, TextTransformerEncoder) and encoder.packing
    off = compose_config("train", ["experiment=avdigits_captioning", "model.encoders.text.packing=true"])
    assert off.model.packing is False and off.model.encoders.text.packing is True and off.model.head.packing is False
    multitask = compose_config("train", ["experiment=avdigits_multitask", "model.packing=true"])
    assert multitask.model.head.heads.captioning.packing is True


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_packed_training_gives_the_padded_losses(experiment: str, tmp_path: Path, monkeypatch):
    overrides, must_pack = EXPERIMENTS[experiment]
    padded, packed_off = step_losses([*overrides, "model.packing=false"], tmp_path / "padded", monkeypatch)
    packed, packed_on = step_losses([*overrides, "model.packing=true"], tmp_path / "packed", monkeypatch)
    assert not packed_off & must_pack and must_pack <= packed_on
    assert len(padded) == 2 and len(packed) == 2
    assert max(abs(a - b) for a, b in zip(padded, packed)) <= 1e-5, (padded, packed)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(SAMPLE_PACKED))
def test_sample_packed_text_tower_gives_the_padded_losses(experiment: str, tmp_path: Path, monkeypatch):
    rows: list[tuple[int, ...]] = []
    forward_rows = TransformerEncoder.forward_rows

    def spy(self, packed):
        rows.append(tuple(packed.input_ids.shape))
        return forward_rows(self, packed)

    monkeypatch.setattr(TransformerEncoder, "forward_rows", spy)
    overrides = SAMPLE_PACKED[experiment]
    padded, _ = step_losses(overrides, tmp_path / "padded", monkeypatch)
    assert not rows
    packed, _ = step_losses([*overrides, "model.encoders.text.sample_packing={budget:32,strategy:ffd}"],
                            tmp_path / "packed", monkeypatch)
    assert len(rows) == 2 and all(width == 32 for _, width in rows)  # one packed layout per training step
    assert len(padded) == 2 and len(packed) == 2
    assert max(abs(a - b) for a, b in zip(padded, packed)) <= 1e-5, (padded, packed)

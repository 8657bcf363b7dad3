"""The training module's LR schedules and its ready-model mode."""

from __future__ import annotations

import pytest
import torch

from polyfuse.training import PolyfuseLitModule
from polyfuse.training.module import warmup_decay


def test_linear_schedule_warms_up_over_a_fraction_then_decays_to_zero():
    lr = warmup_decay("linear", total=100, warmup_steps=50, warmup_ratio=0.1)
    assert [round(lr(s), 6) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert lr(10) == 1.0 and lr(55) == pytest.approx(0.5) and lr(100) == 0.0 and lr(150) == 0.0


def test_cosine_schedule_is_unchanged():
    lr = warmup_decay("cosine", total=100, warmup_steps=10)
    assert lr(9) == 1.0 and lr(55) == pytest.approx(0.5) and lr(100) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="cosine, linear"):
        warmup_decay("step", 10, 1)


def test_ready_model_replaces_encoders_fusion_head():
    from polyfuse.models import ViLT

    model = ViLT(task="vqa", labels=["yes", "no"], vocab_size=20, dim=16, depth=1, heads=2, mlp_hidden=32,
                 image_size=16, patch_size=8, in_chans=1)
    module = PolyfuseLitModule(optimizer=lambda params: torch.optim.AdamW(params), model=model, scheduler="linear")
    assert module.model is model and module.monitor == "val/vqa_acc"
    with pytest.raises(ValueError, match="encoders"):
        PolyfuseLitModule(optimizer=lambda params: torch.optim.AdamW(params))

"""NonFiniteGuard on the real model and data: a NaN batch costs one step, a NaN run stops clearly."""

from __future__ import annotations

import math
from typing import Any

import hydra
import lightning as L
import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.plugins import MixedPrecision

from polyfuse.training import PolyfuseLitModule
from polyfuse.training.nan_guard import NonFiniteGuard, NonFiniteTrainingError
from polyfuse.training.nonfinite import locate_non_finite

STEPS = 6


class PoisonBatches(Callback):
    """Fill the audio waveforms of the given global steps with NaN; snapshot the weights around them."""

    def __init__(self, steps: set[int]) -> None:
        self.steps = steps
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.snapshots[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        if trainer.global_step in self.steps:
            batch.inputs["audio"].values.fill_(float("nan"))


class PoisonGradient(Callback):
    """A NaN gradient (finite loss) in the fusion's parameters at one step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step:
            next(pl_module.model.fusion.parameters()).grad.fill_(float("nan"))


@pytest.fixture
def make_module(compose_train):
    def _make() -> tuple[PolyfuseLitModule, Any]:
        cfg = compose_train(["data.modalities=[image,audio]", "data.batch_size=8", "model.scheduler=null"])
        torch.manual_seed(0)
        return hydra.utils.instantiate(cfg.model), hydra.utils.instantiate(cfg.data)
    return _make


def _fit(module, datamodule, callbacks: list[Callback], steps: int = STEPS, **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=callbacks, **trainer_kwargs)
    trainer.fit(module, datamodule=datamodule)
    return trainer


def _all_finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in module.state_dict().values() if t.is_floating_point())


def test_a_nan_batch_is_skipped_counted_and_located(make_module):
    module, datamodule = make_module()
    guard, poison = NonFiniteGuard(max_consecutive=2), PoisonBatches({3})
    with pytest.warns(RuntimeWarning, match=r"input batch holds non-finite values: batch\.inputs\['audio'\]\.values"
                                            r".*first non-finite output in module 'model\.encoders\.audio"):
        trainer = _fit(module, datamodule, [guard, poison])
    assert trainer.global_step == STEPS                     # training went on after the bad step
    assert guard.skipped_steps == 1 and guard.consecutive == 0
    assert _all_finite(module)                              # weights and batch-norm statistics
    before, after = poison.snapshots[3], poison.snapshots[4]
    for key in before:                                      # the skipped step changed nothing at all
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(poison.snapshots[2][k], before[k]) for k in before)  # good steps do update
    assert "running_mean" in " ".join(before)               # ... including the audio CNN's BatchNorm


def test_consecutive_bad_steps_stop_the_run_with_a_clear_error(make_module):
    module, datamodule = make_module()
    guard = NonFiniteGuard(max_consecutive=3)
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteTrainingError) as error:
        _fit(module, datamodule, [guard, PoisonBatches({2, 3, 4, 5})], steps=10)
    message = str(error.value)
    assert "3 consecutive" in message and "max_consecutive=3" in message
    assert "batch.inputs['audio'].values" in message and "model.encoders.audio" in message
    assert guard.skipped_steps == 3 and _all_finite(module)


def test_isolated_bad_steps_do_not_add_up_to_a_stop(make_module):
    module, datamodule = make_module()
    guard = NonFiniteGuard(max_consecutive=2)
    with pytest.warns(RuntimeWarning):
        trainer = _fit(module, datamodule, [guard, PoisonBatches({1, 3, 5})], steps=7)
    assert trainer.global_step == 7 and guard.skipped_steps == 3 and _all_finite(module)


def test_a_non_finite_gradient_with_a_finite_loss_is_skipped_and_named(make_module):
    module, datamodule = make_module()
    guard = NonFiniteGuard()
    with pytest.warns(RuntimeWarning, match=r"non-finite gradient .*forward pass finite; non-finite gradients in "
                                            r"model\.fusion\."):
        _fit(module, datamodule, [guard, PoisonGradient(step=2)], steps=4)
    assert guard.skipped_steps == 1 and _all_finite(module)


def test_fp16_overflow_is_left_to_the_loss_scaler(make_module):
    """With a GradScaler (what ``16-mixed`` uses on GPU; built explicitly here on CPU), an absurd
    initial scale overflows the gradients: the scaler skips those steps and lowers the scale, the
    guard counts overflows, not bad steps, and training ends finite."""
    module, datamodule = make_module()
    guard = NonFiniteGuard(max_consecutive=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 120)
    precision = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    _fit(module, datamodule, [guard], steps=5, plugins=[precision], gradient_clip_val=None)
    assert guard.overflow_steps >= 2 and guard.skipped_steps == 0
    assert scaler.get_scale() < 2.0 ** 120 and _all_finite(module)


def test_locate_blames_the_first_module_not_its_parents():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(4, 1)))
    with torch.no_grad():
        model[1][1].weight.fill_(math.inf)
    report = locate_non_finite(model, torch.ones(2, 4))
    assert report is not None and report.startswith("first non-finite output in module '1.1' (Linear)")
    assert locate_non_finite(torch.nn.Linear(4, 1), torch.ones(2, 4)) is None


def test_max_consecutive_must_be_positive():
    with pytest.raises(ValueError, match="max_consecutive"):
        NonFiniteGuard(max_consecutive=0)

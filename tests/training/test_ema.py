"""EMA of the weights (callbacks/ema.yaml): the average it keeps, validation with the EMA weights swapped in,
checkpointing and exact resume, and loading the EMA weights for evaluation / inference."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from polyfuse.training.ema import EMAWeights, ema_state_dict

from .test_grad_cache_module import make_batch, make_module

pytestmark = pytest.mark.usefixtures("single_thread")
WEIGHT = "model.head.projections.image.weight"


class Recorder(Callback):
    """The weights after every optimiser step, and a weight as validation sees it."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []
        self.validated: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.validated.append(pl_module.state_dict()[WEIGHT].clone())


def loader(seeds: list[int]) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader([make_batch(s) for s in seeds], batch_size=None, collate_fn=lambda b: b)


def fit(root: Path, epochs: int, ema: EMAWeights, resume: Path | None = None, validate: bool = False):
    module, recorder = make_module(None), Recorder()
    saver = ModelCheckpoint(dirpath=root / "checkpoints", filename="last", save_top_k=1)  # at validation end
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=validate,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
                        num_sanity_val_steps=0, limit_val_batches=1 if validate else 0,
                        callbacks=[saver, ema, recorder] if validate else [ema, recorder])
    trainer.fit(module, loader([1, 2, 3]), loader([9]) if validate else None, ckpt_path=resume)
    return module, trainer, recorder


def test_warmup_ramps_the_decay_up_to_its_value():
    ema = EMAWeights(decay=0.999)
    assert ema.decay_at(1) == pytest.approx(1 - 2 ** (-2 / 3))
    assert ema.decay_at(10) < ema.decay_at(100) < 0.999 == ema.decay_at(10 ** 6)
    assert EMAWeights(decay=0.9, warmup=False).decay_at(1) == 0.9
    with pytest.raises(ValueError, match="callbacks.ema.decay"):
        EMAWeights(decay=1.0)


def test_the_average_of_the_weights_after_each_step(tmp_path: Path):
    ema = EMAWeights(decay=0.6, warmup=False, every_n_steps=2)
    module, _, recorder = fit(tmp_path, 2, ema)
    steps = recorder.steps                       # 6 optimiser steps; updates after steps 2, 4, 6
    expected = steps[1][WEIGHT].clone()           # step 2: the average starts from the weights
    for index in (3, 5):
        expected = 0.6 * expected + 0.4 * steps[index][WEIGHT]
    torch.testing.assert_close(ema.weights[WEIGHT], expected)
    assert ema.updates == 2 and not torch.allclose(expected, module.state_dict()[WEIGHT])


def test_validation_sees_the_ema_weights_and_training_gets_its_own_back(tmp_path: Path):
    ema = EMAWeights(decay=0.5, warmup=False)
    module, _, recorder = fit(tmp_path, 2, ema, validate=True)
    assert len(recorder.validated) == 2
    # the second validation (after epoch 2) saw the EMA weights of that moment: the final ones
    torch.testing.assert_close(recorder.validated[-1], ema.weights[WEIGHT])
    torch.testing.assert_close(module.state_dict()[WEIGHT], recorder.steps[-1][WEIGHT])  # training weights back
    assert not torch.allclose(recorder.validated[-1], recorder.steps[-1][WEIGHT])
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)  # written at validation end
    torch.testing.assert_close(saved["state_dict"][WEIGHT], recorder.steps[-1][WEIGHT], rtol=0, atol=0)
    torch.testing.assert_close(ema_state_dict(saved)[WEIGHT], ema.weights[WEIGHT], rtol=0, atol=0)


def test_resuming_reproduces_the_ema_weights_and_they_load_for_evaluation(tmp_path: Path):
    straight = EMAWeights(decay=0.7)
    fit(tmp_path / "straight", 2, straight)
    first = EMAWeights(decay=0.7)
    _, trainer, _ = fit(tmp_path / "first", 1, first)
    checkpoint = tmp_path / "epoch1.ckpt"
    trainer.save_checkpoint(checkpoint)
    torch.testing.assert_close(ema_state_dict(checkpoint)[WEIGHT], first.weights[WEIGHT], rtol=0, atol=0)
    resumed = EMAWeights(decay=0.7)
    fit(tmp_path / "resumed", 2, resumed, resume=checkpoint)
    assert resumed.updates == straight.updates == 5
    for name, value in straight.weights.items():
        assert torch.equal(resumed.weights[name], value), name
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "resumed" / "checkpoints" / "ema.safetensors"))
    module = make_module(None)
    module.load_state_dict(saved)  # strict: a whole LightningModule state dict
    torch.testing.assert_close(module.state_dict()[WEIGHT], straight.weights[WEIGHT], rtol=0, atol=0)
    with pytest.raises(KeyError, match="holds no EMA weights"):
        ema_state_dict({"callbacks": {}})


def loss_of(state: dict[str, torch.Tensor], seed: int = 9) -> float:
    """The loss of the test batch ``seed`` under the weights ``state``."""
    module = make_module(None)
    module.load_state_dict(state)
    with torch.no_grad():
        return float(module.eval()._step(make_batch(seed))[1])


def measured_test_loss(module, trainer: L.Trainer, ckpt_path: Path | None = None) -> float:
    return float(trainer.test(module, loader([9]), ckpt_path=ckpt_path, verbose=False, weights_only=True)[0]["test/loss"])


@pytest.mark.parametrize("use_ema", [True, False])
def test_testing_uses_the_ema_weights_of_the_tested_checkpoint(tmp_path: Path, use_ema: bool):
    """``trainer.test`` (what ``polyfuse-train`` runs after fitting) reports the metrics of the EMA weights
    -- those saved with the tested checkpoint, or the current average -- unless ``test=False``; the
    training weights are back afterwards."""
    ema = EMAWeights(decay=0.5, warmup=False, test=use_ema)
    module, trainer, recorder = fit(tmp_path, 2, ema, validate=True)
    raw = {k: v.clone() for k, v in module.state_dict().items()}
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"                      # written after epoch 2's validation
    saved = torch.load(checkpoint, weights_only=True)
    assert loss_of(ema_state_dict(saved)) != pytest.approx(loss_of(saved["state_dict"]), rel=1e-4)  # they differ
    expected_current = loss_of(ema.weights if use_ema else raw)
    assert measured_test_loss(module, trainer) == pytest.approx(expected_current, rel=1e-5)
    for name, value in module.state_dict().items():
        assert torch.equal(value, raw[name]), name                            # training weights put back
    ema.weights = {k: v + 1.0 if v.is_floating_point() else v for k, v in ema.weights.items()}  # not what was saved
    expected_saved = loss_of(ema_state_dict(saved) if use_ema else saved["state_dict"])
    assert measured_test_loss(module, trainer, checkpoint) == pytest.approx(expected_saved, rel=1e-5)


def test_evaluation_weights_follow_the_run(tmp_path: Path):
    """``polyfuse-eval`` / ``load_model`` (:func:`evaluation_weights`): a run trained with ``callbacks.ema``
    (``test: true``) is evaluated with the EMA weights of its ``best.ckpt``, not ``best.safetensors``'s
    training weights; ``ema=False`` or ``test: false`` pick the training weights; a ``.safetensors`` path
    loads as it is."""
    from safetensors.torch import save_file

    from polyfuse.training.ema import evaluation_weights, trained_with_ema

    ema = EMAWeights(decay=0.5, warmup=False)
    fit(tmp_path, 2, ema, validate=True)
    run = tmp_path / "checkpoints"
    (run / "last.ckpt").rename(run / "best.ckpt")
    saved = torch.load(run / "best.ckpt", weights_only=True)
    save_file({k: v.contiguous() for k, v in saved["state_dict"].items()}, str(run / "best.safetensors"))
    callback = {"_target_": "polyfuse.training.ema.EMAWeights", "decay": 0.5}
    with_ema, without_test = {"callbacks": {"ema": callback}}, {"callbacks": {"ema": {**callback, "test": False}}}
    assert trained_with_ema(with_ema) and not trained_with_ema(without_test) and not trained_with_ema({})
    expected_ema, expected_raw = ema_state_dict(saved)[WEIGHT], saved["state_dict"][WEIGHT]
    assert not torch.equal(expected_ema, expected_raw)
    assert torch.equal(evaluation_weights(tmp_path, "best", with_ema)[WEIGHT], expected_ema)
    assert torch.equal(evaluation_weights(tmp_path, "best", with_ema, ema=False)[WEIGHT], expected_raw)
    assert torch.equal(evaluation_weights(tmp_path, "best", without_test)[WEIGHT], expected_raw)
    assert torch.equal(evaluation_weights(tmp_path, "best", {}, ema=True)[WEIGHT], expected_ema)
    assert torch.equal(evaluation_weights(tmp_path, str(run / "best.ckpt"), with_ema)[WEIGHT], expected_ema)
    assert torch.equal(evaluation_weights(tmp_path, str(run / "best.safetensors"), with_ema)[WEIGHT], expected_raw)
    with pytest.raises(FileNotFoundError, match="no last.ckpt"):
        evaluation_weights(tmp_path, "last", with_ema)
    plain = {**saved, "callbacks": {}}                                     # saved before the first update
    torch.save(plain, run / "plain.ckpt")
    assert torch.equal(evaluation_weights(tmp_path, str(run / "plain.ckpt"), with_ema)[WEIGHT], expected_raw)
    with pytest.raises(KeyError, match="holds no EMA weights"):
        evaluation_weights(tmp_path, str(run / "plain.ckpt"), with_ema, ema=True)

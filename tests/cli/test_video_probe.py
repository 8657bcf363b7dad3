"""Linear probing of a run's encoders (``experiment=avdigits_video_avc_probe``): the encoders of an
``avdigits_video_avc`` run are rebuilt from its directory with its weights, stay frozen, and only the
linear classifier trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polyfuse.training.run_encoder import encoder_from_run

from .run_factory import untrained_run

SMALL = ["data.batch_size=4", "data.eval_batch_size=4"]


@pytest.fixture
def avc_run(compose_train, tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A run directory of ``experiment=avdigits_video_avc`` (config.yaml + best.safetensors) holding
    random weights: what a finished AVC run leaves, without training one."""
    run = tmp_path / "avc"
    return run, untrained_run(compose_train(["experiment=avdigits_video_avc", *SMALL]), run)


def test_encoder_from_run_loads_the_runs_weights_frozen(avc_run) -> None:
    run, state = avc_run
    encoder = encoder_from_run(run, "audio")
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, state[f"model.encoders.audio.{key}"], rtol=0, atol=0)
    assert not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(KeyError, match=r"no trained model.encoders.text .*\['audio', 'video'\]"):
        encoder_from_run(run, "text")


def test_probe_trains_only_the_linear_classifier(compose_train, avc_run) -> None:
    from polyfuse.cli.train import train

    run, state = avc_run
    cfg = compose_train(["experiment=avdigits_video_avc_probe", f"probe_run={run}", *SMALL, "trainer.max_epochs=1",
                         "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                         "+trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0"])
    summary, objects = train(cfg)  # two training steps, one validation and one test batch per split
    model = objects["model"].model
    assert summary["test"]["test/acc"] == summary["test"]["test/acc"]  # a number, not NaN
    for modality in ("video", "audio"):  # the probed features are the run's, untouched by training
        for key, value in model.encoders[modality].state_dict().items():
            torch.testing.assert_close(value, state[f"model.encoders.{modality}.{key}"], rtol=0, atol=0)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("fusion.", "head.")) for name in trainable)
    linear = [m for m in [*model.fusion.modules(), *model.head.modules()] if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 2  # concat fusion without MLP hidden layer, then a linear head: one linear map

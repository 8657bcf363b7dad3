"""``polyfuse-eval`` on a tiny trained run: files, consistency with the training's test metrics,
checkpoint choices, and errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from polyfuse.cli.eval import run_eval
from polyfuse.training.run_dir import checkpoint_file, load_weights

from .run_factory import SUMMARIES, compose_config, trained_run

QUICK = ["robustness.rates=[0,0.5,1]", "robustness.severities=[0,1]", "robustness.subsets=single",
         "batch_size=32", "max_batches=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return trained_run(tmp_path_factory)


def test_eval_writes_curves_and_summaries_consistent_with_training(run: Path):
    (result,) = run_eval(compose_config("eval", [f"run_dir={run}", *QUICK]))
    out = run / "robustness"
    for name in ("clean.json", "robustness.csv", "summary.csv", "curves.png"):
        assert (out / name).is_file(), name
    records = pd.read_csv(out / "robustness.csv")
    assert len(records) == 3 * 3 + 6 * 2  # 3 single-modality drops x 3 rates + 6 corruptions x 2 severities
    # the first test batch, the best weights: the same accuracy Lightning's test loop logged
    assert result["clean"]["acc"] == pytest.approx(SUMMARIES[run]["test"]["test/acc"], abs=1e-6)
    assert (records[records["level"] == 0]["acc"] == result["clean"]["acc"]).all()
    table = pd.read_csv(out / "summary.csv")
    assert {"perturbation", "clean", "worst", "relative_robustness"} <= set(table.columns)


def test_checkpoint_choices_load_the_same_best_weights(run: Path):
    safetensors, ckpt = checkpoint_file(run, "best"), run / "checkpoints" / "best.ckpt"
    assert safetensors.suffix == ".safetensors"
    a, b = load_weights(safetensors), load_weights(ckpt)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    (result,) = run_eval(compose_config("eval", [f"run_dir={run}", "checkpoint=last", "robustness.enabled=false",
                                                 "batch_size=32", "max_batches=1"]))
    assert 0.0 <= result["clean"]["acc"] <= 1.0 and "summary" not in result


def test_missing_run_directory_is_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no such run"):
        run_eval(compose_config("eval", [f"run_dir={tmp_path / 'nope'}"]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no training run"):
        run_eval(compose_config("eval", [f"run_dir={tmp_path / 'empty'}"]))


def test_a_run_trained_with_ema_is_evaluated_with_its_ema_weights(tmp_path: Path):
    """``callbacks.ema`` (``test: true``): the training's ``test/*`` metrics and ``polyfuse-eval`` both use the
    EMA weights saved with ``best.ckpt`` (not ``best.safetensors``' training weights); ``ema=false`` loads
    the training weights."""
    import torch

    from polyfuse.cli.train import train
    from polyfuse.training.ema import ema_state_dict
    from polyfuse.training.run_dir import load_model

    from .run_factory import TINY

    run = tmp_path / "ema_run"
    summary, _ = train(compose_config("train", ["callbacks=[default,ema]", "callbacks.ema.decay=0.5",
                                                "callbacks.ema.warmup=false", *TINY], run))
    ema, raw = ema_state_dict(run / "checkpoints" / "best.ckpt"), load_weights(checkpoint_file(run, "best"))
    name = next(k for k in raw if k.endswith("weight") and not torch.equal(raw[k], ema[k]))
    assert torch.equal(load_model(run)[0].state_dict()[name], ema[name])
    assert torch.equal(load_model(run, ema=False)[0].state_dict()[name], raw[name])
    import polyfuse  # the inference API loads the same weights as polyfuse-eval

    model_name = name.removeprefix("model.")
    assert torch.equal(polyfuse.load(run).model.state_dict()[model_name], ema[name])
    assert torch.equal(polyfuse.load(run, ema=False).model.state_dict()[model_name], raw[name])
    (result,) = run_eval(compose_config("eval", [f"run_dir={run}", "robustness.enabled=false", "batch_size=32",
                                                 "max_batches=1"]))
    assert result["clean"]["acc"] == pytest.approx(summary["test"]["test/acc"], abs=1e-6)

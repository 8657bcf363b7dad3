"""The LLaVA-style experiments train end to end through the CLI's code path (tiny random LM, AV-digits)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from polyfuse.cli.train import train

SHORT = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1", "data.batch_size=8"]


def run_stage1(compose_train, tmp_path: Path) -> Path:
    summary, _ = train(compose_train(["experiment=avdigits_llava_stage1", *SHORT]))
    assert set(summary["test"]) >= {"test/loss", "test_real/loss", "test/answer_token_acc", "test/answer_token_acc_written",
                                    "test/answer_token_acc_spoken", "test/answer_exact_match_both"}
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


def test_stage1_trains_and_checkpoints_the_connector(compose_train, tmp_path: Path):
    checkpoint = run_stage1(compose_train, tmp_path)
    state = torch.load(checkpoint, weights_only=False, map_location="cpu")["state_dict"]
    assert any(key.startswith("model.connector.") for key in state)


def test_stage2_starts_from_stage1_and_saves_lora(compose_train, tmp_path: Path):
    pytest.importorskip("peft", reason="stage 2 (LoRA) needs the `llm` extra (peft)")
    checkpoint = run_stage1(compose_train, tmp_path)
    stage1 = torch.load(checkpoint, weights_only=False, map_location="cpu")["state_dict"]
    cfg = compose_train(["experiment=avdigits_llava_stage2", *SHORT, f"model.model.connector_checkpoint={checkpoint}"])
    module = instantiate(cfg.model)
    for key, value in module.model.connector.state_dict().items():  # stage 1's connector, loaded
        torch.testing.assert_close(value, stage1[f"model.connector.{key}"])
    train(cfg)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert any("lora_" in key for key in state["state_dict"])
    assert (tmp_path / "run" / "lora" / "adapter_model.safetensors").is_file()  # the adapters alone


def test_another_connector_and_missing_audio_run(compose_train):
    cfg = compose_train(["experiment=avdigits_llava_stage1", "debug=fdr", "data.batch_size=4",
                         "+model/fusion@model.model.connector=qformer_connector", "model.model.connector.depth=1",
                         "data.splits.train.missing={audio: 0.5}"])
    train(cfg)

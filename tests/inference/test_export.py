"""``polyfuse-export``: a self-contained folder that ``polyfuse.load`` reads outside the checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

import polyfuse
from polyfuse.cli.config import repo_root
from polyfuse.inference.export import main as export_main

from .tiny_runs import TASKS, assert_same_predictions, raw_test_inputs


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_exported_folder_moved_outside_the_checkout_predicts_the_same(runs, task, tmp_path, monkeypatch):
    run = runs(task)
    checkout = str(repo_root())
    inputs = raw_test_inputs(run)
    expected = polyfuse.load(run).predict(**inputs)
    export_main([str(run), str(tmp_path / "export")])
    folder = shutil.move(str(tmp_path / "export"), str(tmp_path / "elsewhere" / "model"))
    elsewhere = tmp_path / "no_checkout"
    elsewhere.mkdir()
    monkeypatch.setenv("POLYFUSE_ROOT", str(elsewhere))  # nothing may resolve against the checkout
    monkeypatch.chdir(elsewhere)
    for name in ("config.yaml", "inference.json"):
        text = (tmp_path / "elsewhere" / "model" / name).read_text()
        if name == "inference.json":  # the source run's path is recorded for the card, nothing reads it
            text = json.dumps({k: v for k, v in json.loads(text).items() if k != "source"})
        assert checkout not in text and "/data/avdigits" not in text, f"{name} points into the checkout"
    model = polyfuse.load(folder)
    assert model.task == task and not model.training
    assert_same_predictions(model.predict(**inputs), expected)


def test_the_folder_has_its_files_and_a_model_card(runs, tmp_path):
    run = runs("vqa")
    folder = tmp_path / "vqa_model"
    command = [sys.executable, "-m", "polyfuse.export", str(run), str(folder), "--checkpoint", "last"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)  # the command line, as users run it
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"-> {folder}" in done.stdout
    assert {p.name for p in folder.iterdir()} >= {"README.md", "config.yaml", "inference.json", "model.safetensors",
                                                  "tokenizer.json"}
    manifest = json.loads((folder / "inference.json").read_text())
    assert manifest["preprocessing"]["text"]["tokenizer"] == "tokenizer.json" and manifest["task"] == "vqa"
    assert manifest["source"]["checkpoint"] == "last.ckpt"
    config = yaml.safe_load((folder / "config.yaml").read_text())
    vocabulary = config["model"]["head"]["vocabulary"]  # read from the dataset at training: now the answers
    assert isinstance(vocabulary, list) and "yes" in vocabulary
    card = (folder / "README.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert "polyfuse-train experiment=avdigits_vqa" in card
    assert "test/vqa_acc" in card and f"{summary['test']['test/vqa_acc']:.4f}" in card
    assert "polyfuse.load(" in card
    export_main([str(run), str(folder)])  # an earlier export is replaced
    assert json.loads((folder / "inference.json").read_text())["source"]["checkpoint"] != "last.ckpt"
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        export_main([str(run), str(tmp_path / "busy")])


def test_captioning_export_copies_the_decoder_tokenizer(runs, tmp_path):
    folder = tmp_path / "captioner"
    export_main([str(runs("captioning")), str(folder)])
    manifest = json.loads((folder / "inference.json").read_text())
    assert manifest["files"] == {"model.head.tokenizer": "files/tokenizer.json"}
    assert (folder / "files" / "tokenizer.json").is_file()
    assert polyfuse.load(folder).tokenizer.token_to_id("[SEP]") == 3  # the head's eos_id

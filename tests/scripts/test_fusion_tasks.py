"""scripts/fusion_tasks.py: which runs are missing, how they are grouped into multiruns, that finished runs
are skipped and killed ones rerun, and that the commands compose the intended configs (no training)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from polyfuse.cli.config import repo_root

SCRIPTS = repo_root() / "scripts"


@pytest.fixture(scope="module")
def tasks_script():
    sys.path.insert(0, str(SCRIPTS))  # fusion_tasks imports its sibling fusion_table (as when run as a script)
    try:
        spec = importlib.util.spec_from_file_location("fusion_tasks", SCRIPTS / "fusion_tasks.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(SCRIPTS))


def finish(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps({"test": {"test/acc": 0.5}}))


def test_missing_runs_and_groups(tasks_script, tmp_path):
    finish(tasks_script.run_dir(tmp_path, "image only", "synergy", 0))
    finish(tasks_script.run_dir(tmp_path, "image only", "unique", 0))
    finish(tasks_script.run_dir(tmp_path, "image only", "unique", 1))
    (tasks_script.run_dir(tmp_path, "image only", "redundant", 1)).mkdir(parents=True)  # killed: no summary
    missing = tasks_script.missing_runs(tmp_path, "image only", ["redundant", "unique", "synergy"], [0, 1])
    assert missing == {"redundant": [0, 1], "synergy": [1]}
    assert tasks_script.multirun_groups(missing) == [(["redundant"], [0, 1]), (["synergy"], [1])]
    assert tasks_script.multirun_groups({"a": [0, 1], "b": [0, 1]}) == [(["a", "b"], [0, 1])]


def test_train_variant_skips_finished_and_reruns_killed(tasks_script, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tasks_script, "call", lambda command, log, threads: calls.append(command) or 0)
    for seed in (0, 1):
        finish(tasks_script.run_dir(tmp_path, "late", "synergy", seed))
    killed = tasks_script.run_dir(tmp_path, "late", "unique", 1)
    (killed / "checkpoints").mkdir(parents=True)
    finish(tasks_script.run_dir(tmp_path, "late", "unique", 0))
    assert tasks_script.train_variant("late", ["synergy"], [0, 1], tmp_path, [], None) == 0
    assert calls == []  # everything finished: nothing runs
    tasks_script.train_variant("late", ["synergy", "unique"], [0, 1], tmp_path, ["trainer.max_epochs=1"], None)
    assert len(calls) == 1 and not killed.exists()
    command = calls[0]
    assert "seed=1" in command and "data=avdigits_unique" in command and "model/fusion=late" in command
    assert "trainer.max_epochs=1" in command and f"hydra.sweep.dir={(tmp_path / 'late').resolve()}" in command
    assert command.index("trainer.max_epochs=1") < command.index("model/fusion=late")


def test_variant_order_and_pretraining(tasks_script, tmp_path):
    assert tasks_script.ordered_variants(["bilinear", "tensor", "gmu", "late"]) == \
        ["image only", "audio only", "late", "tensor", "bilinear", "gmu"]
    assert tasks_script.ordered_variants(["concat"], baselines=False) == ["concat"]
    assert [m for m, _ in tasks_script.pretrain_commands(tmp_path, [])] == ["image", "audio"]
    finish(tmp_path / "image")
    [(modality, command)] = tasks_script.pretrain_commands(tmp_path, ["trainer.max_epochs=2"])
    assert modality == "audio" and "data.modalities=[audio]" in command and command[-1] == "trainer.max_epochs=2"
    with pytest.raises(ValueError, match="budget"):
        tasks_script.budget_overrides("warm", tmp_path)


@pytest.mark.parametrize("variant", ["image only", "tensor"])
def test_multirun_command_composes_the_frozen_budget(tasks_script, compose_train, tmp_path, variant):
    """One job of the multirun, composed as Hydra would: frozen encoders from the pretraining runs, the
    task's data, the variant's modalities, and a run directory that is the one the skip logic checks."""
    command = tasks_script.multirun_command(variant, ["unique"], [2], tmp_path,
                                            tasks_script.budget_overrides("frozen", tmp_path / "pretrain"))
    overrides = command[command.index("polyfuse.cli.train") + 2:]  # after `-m` (multirun)
    assert command[command.index("polyfuse.cli.train") + 1] == "-m"
    cfg = compose_train(overrides)
    assert cfg.data.task == "unique" and cfg.seed == 2 and list(cfg.data.test_splits) == ["test"]
    assert list(cfg.data.modalities) == (["image"] if variant == "image only" else ["image", "audio"])
    for modality in ("image", "audio"):
        encoder = cfg.model.encoders[modality]
        assert encoder._target_ == "polyfuse.training.run_encoder.encoder_from_run" and encoder.freeze is True
        assert encoder.run_dir == str((tmp_path / "pretrain" / modality).resolve())
    assert cfg.model.encoders.get("text") is None
    run = Path(cfg.hydra.sweep.dir) / OmegaConf.select(cfg, "hydra.sweep.subdir")
    assert run == tasks_script.run_dir(tmp_path, variant, "unique", 2).resolve()


def test_pretraining_command_composes(tasks_script, compose_train, tmp_path):
    [(_, command)] = tasks_script.pretrain_commands(tmp_path, [])[1:]
    cfg = compose_train(command[command.index("polyfuse.cli.train") + 1:])
    assert list(cfg.data.modalities) == ["audio"] and cfg.data.task == "redundant"
    assert cfg.model.encoders.audio._target_ == "polyfuse.encoders.AudioCNNEncoder"
    assert cfg.hydra.run.dir == str((tmp_path / "audio").resolve())


def test_tasks_main_writes_the_table_from_finished_runs_only(tasks_script, tmp_path, monkeypatch):
    """Table-only mode: no training, the table (with how many runs finished) spliced between the markers."""
    docs = tmp_path / "fusions.md"
    docs.write_text("head\n<!-- fusion-table:tasks:start -->\nold\n<!-- fusion-table:tasks:end -->\ntail\n")
    records = pd.DataFrame([{"variant": "late", "task": "synergy", "seed": s, "acc": 0.1 + 0.01 * s, "epochs": 20,
                             "fit": 30.0, "curve": [0.1, 0.12]} for s in range(3)])
    monkeypatch.setattr(tasks_script, "task_records", lambda out: records)
    args = argparse.Namespace(task_names=["synergy"], no_baselines=False, out=tmp_path / "runs", pretrain_dir=None,
                              budget="frozen", overrides=[], train=False, seeds=[0, 1, 2], docs=docs,
                              predictions=False)
    text = tasks_script.tasks_main(args, ["late", "concat"])
    written = docs.read_text()
    assert "old" not in written and written.startswith("head\n") and written.endswith("tail\n") and text in written
    assert "3 of 12 runs finished" in text  # 4 variants (2 baselines) x 1 task x 3 seeds
    assert "| `late` | 11.0 ± 2.5 (3) |" in text
    assert "--names late concat" in text and "--task-names synergy" in text
    assert "No finished run yet: `image only`, `audio only`, `concat`." in text


def test_fusion_table_tasks_flag_runs_the_interaction_table(tasks_script, tmp_path, monkeypatch, capsys):
    """``scripts/fusion_table.py --tasks`` takes fusion_tasks' options and writes its table (table-only mode)."""
    spec = importlib.util.spec_from_file_location("fusion_table", SCRIPTS / "fusion_table.py")
    table_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table_script)
    docs = tmp_path / "fusions.md"
    docs.write_text("<!-- fusion-table:tasks:start -->\n<!-- fusion-table:tasks:end -->\n")
    monkeypatch.setattr(sys, "argv", ["fusion_table.py", "--tasks", "--names", "late", "--seeds", "0", "--out",
                                      str(tmp_path / "runs"), "--docs", str(docs), "--task-names", "synergy"])
    (tmp_path / "runs").mkdir()
    table_script.main()
    assert "No run finished yet (0 of 3)" in docs.read_text()  # image only, audio only, late x 1 task x 1 seed
    assert "--names late --seeds 0" in capsys.readouterr().out


def _fake_run(path: Path, fusion: str, task: str, seed: int, modalities: list[str], acc: float) -> None:
    """A finished run directory as polyfuse-train leaves it (the files task_records reads)."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "hydra.yaml").write_text(json.dumps(
        {"hydra": {"runtime": {"choices": {"model/fusion": fusion, "data": f"avdigits_{task}"}}}}))
    (path / "config.yaml").write_text(json.dumps({"seed": seed, "task_name": "x", "data": {"modalities": modalities}}))
    (path / "summary.json").write_text(json.dumps({"test": {"test/acc": acc}, "epochs": 2, "fit_seconds": 5.0}))
    pd.DataFrame({"epoch": [0, 1], "val/acc": [0.1, acc]}).to_csv(path / "metrics.csv", index=False)


def test_task_records_reads_table_runs_and_leaves_out_the_pretraining(tasks_script, tmp_path):
    _fake_run(tmp_path / "pretrain" / "image", "concat", "redundant", 0, ["image"], 0.98)
    _fake_run(tasks_script.run_dir(tmp_path, "image only", "unique", 1), "concat", "unique", 1, ["image"], 0.4)
    _fake_run(tasks_script.run_dir(tmp_path, "late", "synergy", 0), "late", "synergy", 0, ["image", "audio"], 0.1)
    records = tasks_script.task_records(tmp_path).sort_values("variant")
    assert list(zip(records["variant"], records["task"], records["seed"], records["acc"])) == [
        ("image only", "unique", 1, 0.4), ("late", "synergy", 0, 0.1)]
    assert records.iloc[1]["curve"] == [0.1, 0.1]

"""Configs from run directories someone shared: ``_target_`` allow-list in every tool that rebuilds a
model (``load_model``, ``polyfuse-eval``, ``polyfuse-explain``), the trust flag, and
``polyfuse-report``, which reads run directories without instantiating anything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from polyfuse.cli.eval import run_eval
from polyfuse.cli.explain import explain_run
from polyfuse.errors import UntrustedConfigError
from polyfuse.reporting.runs import find_runs, load_model
from polyfuse.safe_config import check_targets, untrusted_targets

from .run_factory import compose_config, trained_run

SHELL = "os.system"


def _hostile(config: dict, where: str) -> dict:
    """``config`` with ``os.system`` planted at ``where``: top (model._target_), deep (an encoder's
    sub-node) or partial (a ``_partial_`` fusion)."""
    config = json.loads(json.dumps(config))
    if where == "top":
        config["model"]["_target_"] = SHELL
    elif where == "deep":
        config["model"]["encoders"]["image"]["hook"] = {"_target_": SHELL, "command": "touch pwned"}
    elif where == "partial":
        config["model"]["fusion"] = {"_target_": SHELL, "_partial_": True}
    return config


EXPECTED_KEY = {"top": "model._target_", "deep": "model.encoders.image.hook._target_",
                "partial": "model.fusion._target_"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def saved_config(run: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))


def _copy_with_config(run: Path, target: Path, config: dict) -> Path:
    shutil.copytree(run, target)
    (target / "config.yaml").write_text(OmegaConf.to_yaml(config))
    return target


def test_a_normal_run_config_passes(saved_config: dict):
    assert untrusted_targets(saved_config) == []
    check_targets(saved_config)
    check_targets(OmegaConf.create(saved_config))


def test_every_kind_of_target_is_checked():
    config = OmegaConf.create({
        "a": {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 2},
        "b": [{"_target_": "builtins.eval", "_args_": ["1"]}],
        "c": {"_target_": "hydra.utils.get_method", "path": "subprocess.run"},
        "d": {"_target_": "hydra.utils.get_class", "path": "polyfuse.encoders.transformer.TransformerBlock"},
        "e": {"_target_": "torch.hub.load", "repo_or_dir": "someone/repo"},
        "f": {"_target_": "transformers.AutoModel.from_pretrained", "trust_remote_code": True},
        "g": {"_target_": "${oc.env:SOME_UNSET_TARGET_VARIABLE_FOR_TEST}"},
        "h": {"_target_": "torchvision_evil.x"},
        "i": {"_target_": "torch.load", "f": "evil.pt", "weights_only": False},
        "j": {"_target_": "torch._C._jit_pass_inline"},
    })
    found = dict(untrusted_targets(config))
    assert found == {"b[0]._target_": "builtins.eval", "c.path": "subprocess.run", "e._target_": "torch.hub.load",
                     "f.trust_remote_code": "trust_remote_code=true (downloads and runs model code)",
                     "g._target_": "<unresolvable interpolation>", "h._target_": "torchvision_evil.x",
                     "i._target_": "torch.load", "j._target_": "torch._C._jit_pass_inline"}


@pytest.mark.parametrize("where", ["top", "deep", "partial"])
def test_load_model_refuses_os_system_and_names_key_target_and_flag(run: Path, saved_config: dict,
                                                                    tmp_path: Path, where: str):
    hostile = _copy_with_config(run, tmp_path / "shared", _hostile(saved_config, where))
    with pytest.raises(UntrustedConfigError) as error:
        load_model(hostile)
    message = str(error.value)
    assert f"{EXPECTED_KEY[where]}: {SHELL}" in message
    assert "trust_config=true" in message and str(hostile / "config.yaml") in message
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("where", ["top", "deep", "partial"])
@pytest.mark.parametrize("tool", ["eval", "explain"])
def test_eval_and_explain_refuse_a_hostile_run(run: Path, saved_config: dict,
                                                                       tmp_path: Path, tool: str, where: str):
    hostile = _copy_with_config(run, tmp_path / "shared", _hostile(saved_config, where))
    cfg = compose_config(tool, [f"run_dir={hostile}"])
    with pytest.raises(UntrustedConfigError) as error:
        run_eval(cfg) if tool == "eval" else explain_run(cfg)
    assert f"{EXPECTED_KEY[where]}: {SHELL}" in str(error.value) and "trust_config=true" in str(error.value)


@pytest.mark.parametrize("tool", ["eval", "explain"])
def test_eval_and_explain_pass_trust_config_on(run: Path, tmp_path: Path, monkeypatch, tool: str):
    import polyfuse.cli.eval
    import polyfuse.cli.explain

    seen = []

    class Stop(Exception):
        pass

    def record(run_dir, checkpoint="best", *, trust_config=False, **_options):
        seen.append(trust_config)
        raise Stop  # right after the rebuild call

    module = polyfuse.cli.eval if tool == "eval" else polyfuse.cli.explain
    monkeypatch.setattr(module, "load_model", record)
    for flag in ("false", "true"):
        with pytest.raises(Stop):
            (run_eval if tool == "eval" else explain_run)(compose_config(tool, [f"run_dir={run}", f"trust_config={flag}"]))
    assert seen == [False, True]


def test_trust_flag_lets_a_custom_target_through(run: Path, saved_config: dict, tmp_path: Path):
    custom = json.loads(json.dumps(saved_config))
    custom["model"]["fusion"]["_target_"] = "tests.cli.custom_targets.concat_fusion"
    shared = _copy_with_config(run, tmp_path / "custom", custom)
    with pytest.raises(UntrustedConfigError, match=r"model\.fusion\._target_: tests\.cli\.custom_targets\.concat_fusion"):
        load_model(shared)
    module, _ = load_model(shared, trust_config=True)
    assert type(module.model.fusion).__name__ == "ConcatFusion"


def test_report_reads_a_hostile_run_without_instantiating_it(run: Path, saved_config: dict, tmp_path: Path):
    hostile = _copy_with_config(run, tmp_path / "shared", _hostile(saved_config, "top"))
    assert [r.path for r in find_runs(hostile)] == [hostile]  # read as data only


@pytest.mark.slow
def test_eval_command_line_refusal_is_one_message_and_exit_2(run: Path, saved_config: dict, tmp_path: Path):
    hostile = _copy_with_config(run, tmp_path / "shared", _hostile(saved_config, "partial"))
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    done = subprocess.run([sys.executable, "-m", "polyfuse.cli.eval", f"run_dir={hostile}"], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"polyfuse-eval: error: {hostile / 'config.yaml'}: refusing" in done.stderr
    assert "model.fusion._target_: os.system" in done.stderr and "trust_config=true" in done.stderr


def test_every_shipped_experiment_passes_the_allow_list_and_the_validator():
    """A run trained from any config in configs/ must load without trust_config."""
    from polyfuse.cli.config import config_dir
    from polyfuse.cli.validate import config_problems

    experiments = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
    assert len(experiments) > 5
    for overrides in [[f"experiment={name}"] for name in experiments] + [["trainer=fsdp"], ["trainer=ddp"]]:
        cfg = compose_config("train", overrides)
        # resolve=False: experiments may leave a required value (probe_run: ???) for the command line
        plain = {key: value for key, value in cfg.items_ex(resolve=False) if key != "hydra"}
        assert untrusted_targets(OmegaConf.create(plain)) == [], overrides
        assert config_problems(cfg) == [], overrides

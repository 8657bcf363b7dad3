"""User errors in-process: the config value validator, and the entry points' one-message wrapper."""

from __future__ import annotations

import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from polyfuse.cli.errors import EXIT_USER_ERROR, user_error_in, user_errors, user_message
from polyfuse.cli.validate import config_problems, validate_config
from polyfuse.data.io import DataFileError
from polyfuse.encoders.loading import CheckpointError
from polyfuse.errors import ConfigValueError, UserInputError


def test_the_default_train_and_eval_configs_are_valid(compose_train):
    assert config_problems(compose_train()) == []
    assert config_problems(compose_train(["+model/modality_dropout=default", "data.missing={audio: 0.5}"])) == []


@pytest.mark.parametrize("override, expected", [
    ("model.optimizer.lr=abc", "model.optimizer.lr='abc' (str): expected a number > 0, e.g. model.optimizer.lr=1e-3"),
    ("model.optimizer.lr=0", "model.optimizer.lr=0: expected a number > 0"),
    ("model.optimizer.weight_decay=-0.1", "model.optimizer.weight_decay=-0.1: expected a number >= 0"),
    ("+model.optimizer.betas=[0.9,1.5]", "model.optimizer.betas[1]=1.5: expected a number in [0, 1)"),
    ("data.batch_size=0", "data.batch_size=0: expected an integer >= 1"),
    ("data.batch_size=8.5", "data.batch_size=8.5 (float): expected an integer >= 1"),
    ("data.num_workers=-1", "data.num_workers=-1: expected an integer >= 0"),
    ("trainer.max_epochs=ten", "trainer.max_epochs='ten' (str): expected an integer >= -1"),
    ("trainer.max_epochs=true", "trainer.max_epochs=True (bool): expected an integer >= -1"),
    ("data.missing={audio: 1.5}", "data.missing.audio=1.5: expected a number in [0, 1]"),
    ("model.fusion.dropout=2", "model.fusion.dropout=2: expected a number in [0, 1]"),
    ("model.head.label_smoothing=x", "model.head.label_smoothing='x' (str): expected a number in [0, 1]"),
])
def test_a_bad_value_is_named_with_its_key_and_expected_type(compose_train, override: str, expected: str):
    cfg = compose_train([override])
    with pytest.raises(ConfigValueError) as error:
        validate_config(cfg)
    assert str(error.value) == expected or str(error.value).startswith(expected)


def test_every_bad_value_is_listed_once():
    cfg = OmegaConf.create({"data": {"batch_size": 0, "num_workers": 1},
                            "model": {"optimizer": {"lr": "abc"}, "modality_dropout": {"p": {"audio": 3}}}})
    assert config_problems(cfg) == [
        "data.batch_size=0: expected an integer >= 1, e.g. data.batch_size=1",
        "model.optimizer.lr='abc' (str): expected a number > 0, e.g. model.optimizer.lr=1e-3",
        "model.modality_dropout.p.audio=3: expected a number in [0, 1], e.g. model.modality_dropout.p.audio=0.1"]
    with pytest.raises(ConfigValueError, match="invalid config values:\n  data.batch_size=0"):
        validate_config(cfg)


def test_library_errors_are_user_errors_and_keep_their_builtin_types():
    assert issubclass(DataFileError, UserInputError) and issubclass(DataFileError, ValueError)
    assert issubclass(CheckpointError, UserInputError) and issubclass(CheckpointError, RuntimeError)
    assert issubclass(ConfigValueError, ValueError)


def test_a_user_error_wrapped_by_instantiate_is_found_and_a_bug_is_not():
    try:
        try:
            raise DataFileError("captions.csv: no such file")
        except DataFileError as cause:
            raise InstantiationException("Error in call to target 'x'") from cause
    except InstantiationException as wrapped:
        assert isinstance(user_error_in(wrapped), DataFileError)
    assert user_error_in(KeyError("a bug")) is None


def test_a_dataloader_worker_traceback_is_cut_to_the_original_message():
    text = ("Caught DataFileError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 3, in f\n    raise DataFileError(...)\n'
            "polyfuse.data.io.DataFileError: image not found: /data/a.jpg (row 3 of train.csv)\n")
    assert user_message(DataFileError(text)) == "image not found: /data/a.jpg (row 3 of train.csv)"


def test_a_missing_checkpoint_is_a_user_error_naming_ckpt_path(compose_train, tmp_path):
    from polyfuse.cli.train import train

    with pytest.raises(FileNotFoundError) as error:
        train(compose_train([f"ckpt_path={tmp_path}/missing.ckpt"]))
    assert user_error_in(error.value) is error.value
    assert user_message(error.value).startswith(f"ckpt_path={tmp_path}/missing.ckpt: no such checkpoint file")


def test_user_errors_prints_one_message_and_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        with user_errors("polyfuse-test"):
            raise ConfigValueError("data.batch_size=0: expected an integer >= 1")
    assert exit_info.value.code == EXIT_USER_ERROR == 2
    assert capsys.readouterr().err == "polyfuse-test: error: data.batch_size=0: expected an integer >= 1\n"

    with pytest.raises(SystemExit):
        with user_errors("polyfuse-test"):
            OmegaConf.create({"run_dir": "???"}).run_dir
    assert "config key 'run_dir' has no value" in capsys.readouterr().err

    with pytest.raises(KeyError):  # a bug keeps its traceback
        with user_errors("polyfuse-test"):
            raise KeyError("a bug")


def test_hydra_full_error_shows_the_full_traceback(monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(MissingMandatoryValue):
        with user_errors("polyfuse-test"):
            OmegaConf.create({"run_dir": "???"}).run_dir


def test_in_a_multirun_the_error_goes_on_to_the_sweeper(compose_train, capsys, monkeypatch):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = compose_train()
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    try:
        with pytest.raises(ConfigValueError):  # Optuna marks the trial failed instead of the sweep ending
            with user_errors("polyfuse-test"):
                raise ConfigValueError("model.optimizer.lr=0: expected a number > 0")
    finally:
        compose_train()  # a single-run Hydra config again for the tests after this one
    assert "polyfuse-test: error: model.optimizer.lr=0" in capsys.readouterr().err

"""Every config file composes, and every object it describes instantiates."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra.errors import ConfigCompositionException, InstantiationException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from polyfuse.cli.config import config_dir

CONFIG_DIR = config_dir()
COMPOSE_ONLY = {"hydra", "paths", "debug", "hparams_search", "hydra/launcher", "hydra/sweeper"}
REQUIRED_CHECKPOINT_KEYS = ("checkpoint", "path")  # `???` values a config leaves to the user
#: `???` keys naming a finished run to start from: such configs are only composed here
#: (probe_run: tests/cli/test_video_probe.py trains the probe from a run directory; pretrain_dir:
#: tests/scripts/test_fusion_tasks.py composes experiment=fusion_tasks)
REQUIRED_RUN_KEYS = ("probe_run", "pretrain_dir")


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory) -> Path:
    """A tiny open_clip-format checkpoint directory (fits ViT-B-32's head layout) for the configs
    that require a checkpoint (``clip.checkpoint: ???``, ``path: ???``)."""
    from polyfuse.models import CLIP

    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 1},
              "text_cfg": {"context_length": 77, "vocab_size": 128, "width": 64, "heads": 8, "layers": 1}}
    return CLIP.from_config(config).save_open_clip(tmp_path_factory.mktemp("open_clip"))


@pytest.fixture(scope="module")
def tiny_vilt(tmp_path_factory) -> Path:
    """A tiny Hugging Face ``ViltForQuestionAnswering`` ``save_pretrained`` directory for the ViLT
    configs (``model.model: {_target_: polyfuse.models.ViLT.from_hf, path: ???}``)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ViltConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                     image_size=32, patch_size=16, vocab_size=128, num_labels=3)
    path = tmp_path_factory.mktemp("vilt")
    transformers.ViltForQuestionAnswering(config).save_pretrained(path)
    return path


def _use_tiny_vilt(cfg: DictConfig, checkpoint: Path) -> None:
    """Point a ViLT config's checkpoint at ``checkpoint``; without the dataset on disk the answer
    vocabulary (read from the training annotations) is the checkpoint's own."""
    node = cfg.model.get("model") if "model" in cfg else None
    target = "" if node is None else str(node.get("_target_"))
    if not (target.startswith("polyfuse.models.ViLT") and target.endswith(".from_hf")):
        return
    node.path = str(checkpoint)
    if not Path(str(cfg.data.root)).exists():
        node.labels = None


def _fill_required_checkpoints(node: DictConfig, checkpoint: Path) -> None:
    """Set every missing (``???``) checkpoint path outside ``hydra`` to ``checkpoint``."""
    for key in node:
        if key == "hydra":
            continue
        if OmegaConf.is_missing(node, key):
            if key in REQUIRED_CHECKPOINT_KEYS:
                node[key] = str(checkpoint)
        elif isinstance(node._get_node(key), DictConfig):
            _fill_required_checkpoints(node[key], checkpoint)


def _options() -> list[tuple[str, str]]:
    found = []
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        rel = path.relative_to(CONFIG_DIR)
        if rel.parent == Path("."):
            continue
        found.append((rel.parent.as_posix(), rel.stem))
    return found


#: data configs whose modalities the default model has no encoder for, and the encoder they get
EXTRA_ENCODERS = {("data", "nlvr2"): ["+model/encoder@model.encoders.image_2=vit_tiny"]}  # the second image
#: data configs of clips: the default model has no video encoder, so compose one with them
VIDEO_DATA = {"avdigits_video", "video_folder", "msrvtt"}


def _override(group: str, option: str) -> list[str]:
    if group == "model/encoder":
        return [f"model/encoder@model.encoders.image={option}"]
    if group == "data" and option in VIDEO_DATA:
        return [f"{group}={option}", "+model/encoder@model.encoders.video=video_factorised"]
    return [f"{group}={option}", *EXTRA_ENCODERS.get((group, option), [])]


def _compose(compose_train, group: str, option: str) -> DictConfig:
    try:
        return compose_train(_override(group, option))
    except ConfigCompositionException:  # groups without a default entry are appended
        return compose_train([f"+{group}={option}"])


def _instantiate_all(cfg: DictConfig) -> None:
    from polyfuse.training.run_dir import set_monitored_metric

    hydra.utils.instantiate(cfg.data)
    set_monitored_metric(cfg, hydra.utils.instantiate(cfg.model))  # as train() does: the head's, or the config's
    for group in ("callbacks", "logger"):
        for node in (cfg.get(group) or {}).values():
            if node is not None and "_target_" in node:
                hydra.utils.instantiate(node)
    trainer_overrides = {}
    if cfg.trainer.get("accelerator") == "gpu" and not torch.cuda.is_available():
        trainer_overrides["accelerator"] = "cpu"  # the rest of a GPU trainer config still instantiates
        if "FSDPStrategy" in str(cfg.trainer.get("strategy")):  # Lightning runs FSDP only on CUDA
            hydra.utils.instantiate(cfg.trainer.strategy)
            return
    hydra.utils.instantiate(cfg.trainer, **trainer_overrides)


def test_there_are_configs_for_every_group():
    groups = {group for group, _ in _options()}
    for expected in ("data", "model", "model/encoder", "model/fusion", "model/head", "trainer", "logger",
                     "callbacks", "experiment", "paths", "hydra"):
        assert expected in groups


@pytest.mark.parametrize(("group", "option"), _options(), ids=[f"{g}/{o}" for g, o in _options()])
def test_config_composes_and_instantiates(compose_train, tiny_open_clip, tiny_vilt, group: str, option: str):
    cfg = _compose(compose_train, group, option)
    _use_tiny_vilt(cfg, tiny_vilt)
    _fill_required_checkpoints(cfg, tiny_open_clip)
    if group.split("/")[0] in COMPOSE_ONLY or group in COMPOSE_ONLY:
        return
    if any(key in cfg.keys() and OmegaConf.is_missing(cfg, key) for key in REQUIRED_RUN_KEYS):
        return
    if group == "model/encoder":
        encoder = hydra.utils.instantiate(cfg.model.encoders.image)
        assert encoder.out_dim > 0
        return
    try:
        _instantiate_all(cfg)
    except (ImportError, InstantiationException) as error:  # an optional extra (peft: polyfuse[llm]) is missing
        if "pip install 'polyfuse[" not in str(error):
            raise
        pytest.skip(str(error))


def test_default_config_instantiates(compose_train):
    _instantiate_all(compose_train())


def test_unknown_choice_lists_valid_options(compose_train):
    with pytest.raises(MissingConfigException) as error:
        compose_train(["model/fusion=does_not_exist"])
    assert "concat" in str(error.value) and "Available options" in str(error.value)


def test_unknown_modality_is_named(compose_train):
    cfg = compose_train(["data.modalities=[image,video]"])
    datamodule = hydra.utils.instantiate(cfg.data)
    with pytest.raises(ValueError, match="video"):
        datamodule.setup("fit")

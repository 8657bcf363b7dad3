"""The one registry behind encoders, fusions and heads, and that every config's target is registered."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import get_object
from omegaconf import OmegaConf

from polyfuse import encoders, fusion, heads
from polyfuse.cli.config import config_dir
from polyfuse.registry import Registry

REGISTRIES = {"encoder": encoders.ENCODERS, "fusion": fusion.FUSIONS, "head": heads.HEADS}


def test_register_build_available_and_errors():
    parts = Registry("part")

    @parts.register("double")
    class Double:
        def __init__(self, value: int) -> None:
            self.value = 2 * value

    parts.register("triple")(lambda value: 3 * value)
    assert parts.available() == ["double", "triple"] and "double" in parts
    assert parts.build("double", 4).value == 8 and parts.build("triple", value=2) == 6
    assert Double.registry_name == "double" and parts.name_of(Double) == "double" and parts.name_of(int) is None
    parts.register("double")(Double)  # the same entry again (a re-import) is harmless
    with pytest.raises(ValueError, match="part 'double' is already registered by Double"):
        parts.register("double")(dict)
    with pytest.raises(KeyError, match="unknown part 'quadruple'; available: double, triple"):
        parts.build("quadruple", 1)


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_unknown_name_lists_the_choices(kind):
    module = {"encoder": encoders, "fusion": fusion, "head": heads}[kind]
    assert isinstance(REGISTRIES[kind], Registry) and module.available() == REGISTRIES[kind].available()
    with pytest.raises(KeyError) as error:
        module.get_class("no_such_part")
    assert f"unknown {kind} 'no_such_part'" in str(error.value)
    assert all(name in str(error.value) for name in module.available())


def test_heads_and_encoders_build_by_name():
    head = heads.build("vqa", in_dim=16, vocabulary=["yes", "no"])
    assert isinstance(head, heads.VQAHead) and head.classifier[-1].out_features == 2
    encoder = encoders.build("vit", image_size=16, patch_size=8, in_chans=1, dim=16, depth=1, heads=2)
    assert isinstance(encoder, encoders.ViTEncoder) and encoder.out_dim == 16


def _target(path: Path) -> str:
    """The ``_target_`` of a config file, following its ``defaults`` within the group (siglip -> contrastive)."""
    node = OmegaConf.load(path)
    if "_target_" in node:
        return str(node["_target_"])
    parents = [entry for entry in node.get("defaults", []) if isinstance(entry, str) and entry != "_self_"]
    assert parents, f"{path} has no _target_ and no defaults"
    return _target(path.parent / f"{parents[0]}.yaml")


CONFIGS = [(kind, path) for kind in REGISTRIES for path in sorted((config_dir() / "model" / kind).glob("*.yaml"))]


@pytest.mark.parametrize(("kind", "path"), CONFIGS, ids=[f"{kind}/{path.stem}" for kind, path in CONFIGS])
def test_every_config_target_is_registered(kind, path):
    target = get_object(_target(path))
    assert REGISTRIES[kind].name_of(target) is not None, (
        f"{path}: {target} is not in the {kind} registry; register it (polyfuse.{kind}s.register)")


def test_configs_cover_each_kind():
    assert {kind for kind, _ in CONFIGS} == set(REGISTRIES) and len(CONFIGS) > 30

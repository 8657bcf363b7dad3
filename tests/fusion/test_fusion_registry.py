"""The registry and the catalogue: every registered fusion has a class export, a config, a test file and a docs row."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyfuse import fusion
from polyfuse.cli.config import repo_root

ROOT = repo_root()


def test_build_and_errors():
    module = fusion.build("concat", dims={"image": 4, "text": 4}, out_dim=8)
    assert isinstance(module, fusion.ConcatFusion) and module.registry_name == "concat"
    with pytest.raises(KeyError, match="available: .*concat"):
        fusion.get_class("nope")
    with pytest.raises(ValueError, match="already registered"):
        fusion.register("concat")(fusion.MeanFusion)


def test_class_is_exported(name):
    cls = fusion.get_class(name)
    assert getattr(fusion, cls.__name__) is cls and cls.__name__ in fusion.__all__


def test_config_test_and_docs_row(name):
    cls = fusion.get_class(name)
    assert (ROOT / "configs" / "model" / "fusion" / f"{name}.yaml").is_file()
    module_file = cls.__module__.rsplit(".", 1)[-1]
    assert (Path(__file__).parent / f"test_{module_file}.py").is_file()
    docs = (ROOT / "docs" / "fusions.md").read_text()
    assert f"| `{name}` |" in docs, f"docs/fusions.md has no catalogue row for {name}"

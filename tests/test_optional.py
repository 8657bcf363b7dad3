"""Optional packages: polyfuse imports and fuses without them, and a feature that needs one names its extra."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

from polyfuse._optional import MissingDependencyError, import_optional

#: import names of the optional packages (pyproject.toml extras), hidden from the subprocess below
OPTIONAL = ("pycocoevalcap", "wandb", "tensorboard", "tensorboardX", "datasets", "webdataset", "open_clip", "timm",
            "optuna", "submitit", "av")


def test_import_optional_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocoevalcap", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"caption metrics needs the optional package `pycocoevalcap`"
                                                     r".*pip install 'polyfuse\[captioning\]'"):
        import_optional("pycocoevalcap", extra="captioning", feature="caption metrics")
    assert import_optional("json", extra="unused") is sys.modules["json"]


@pytest.mark.parametrize("hidden, extra, where, function, args", [
    ("pycocoevalcap", "captioning", "polyfuse.metrics.captioning", "caption_scores",
     ({"1": "a cat"}, {"1": ["a cat"]})),
    ("webdataset", "data", "polyfuse.data.shards", "import_webdataset", ()),
    ("datasets", "data", "polyfuse.data.hf", "load_hf_dataset", ("missing", "train")),
    ("open_clip", "clip", "polyfuse.encoders.pretrained.open_clip_towers", "open_clip_model_config", ("ViT-B-32",)),
    ("av", "video", "polyfuse.data.video", "import_av", ()),
])
def test_features_name_their_extra(monkeypatch, hidden, extra, where, function, args):
    monkeypatch.setitem(sys.modules, hidden, None)
    feature = getattr(importlib.import_module(where), function)
    with pytest.raises(MissingDependencyError, match=rf"`{hidden}`.*pip install 'polyfuse\[{extra}\]'"):
        feature(*args)


def test_core_works_with_every_optional_package_hidden():
    """A fresh interpreter where the optional packages cannot be imported: ``import polyfuse``, the
    training CLI module and a fusion work; the caption metric fails naming ``polyfuse[captioning]``."""
    code = textwrap.dedent(f"""
        import sys
        for name in {OPTIONAL!r}:
            sys.modules[name] = None
        import torch
        import polyfuse, polyfuse.cli.train, polyfuse.training
        from polyfuse import fusion
        f = fusion.build("gmu", dims={{"image": 8, "text": 4}}, out_dim=6)
        out = f({{"image": torch.randn(2, 8), "text": torch.randn(2, 4)}})
        assert out.pooled.shape == (2, 6), out.pooled.shape
        from polyfuse.metrics.captioning import caption_scores
        try:
            caption_scores({{"1": "a cat"}}, {{"1": ["a cat"]}})
        except ImportError as error:
            print("ERROR:", error)
        leaked = sorted(name for name in {OPTIONAL!r} if sys.modules.get(name) is not None)
        print("LEAKED:", leaked)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LEAKED: []" in result.stdout
    assert "ERROR: caption metrics needs the optional package `pycocoevalcap`" in result.stdout
    assert "pip install 'polyfuse[captioning]'" in result.stdout

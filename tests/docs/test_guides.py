"""The worked examples of docs/guides/*.md run.

Every ```python block of a page runs, in page order, in one namespace (later blocks use what earlier
ones defined); each page gets a fresh namespace. All pages run in one child interpreter (one import
of torch, and a guide's registered fusion does not leak into the registry the other tests see).
``yaml`` blocks must parse and name a ``_target_``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from .test_quickstart import code_blocks

REPO = Path(__file__).resolve().parents[2]
GUIDES = sorted((REPO / "docs" / "guides").glob("*.md"))

RUNNER = """
import json, sys, traceback
failures = {}
for name, code in json.load(open(sys.argv[1])).items():
    try:
        exec(compile(code, f"docs/guides/{name}.md", "exec"), {"__name__": f"guide_{name}"})
    except Exception:
        failures[name] = traceback.format_exc()
print("GUIDE-FAILURES " + json.dumps(failures))
"""


def test_there_is_a_guide_for_each_extension_point():
    assert {path.stem for path in GUIDES} >= {"add_encoder", "add_fusion", "add_head", "add_dataset"}


def test_guide_configs_name_the_classes_the_guide_defines():
    """A guide's configs parse, and one of them builds the class its code defines (``_target_: ...MaxFusion``)."""
    for guide in GUIDES:
        blocks = code_blocks(guide.read_text())
        defined = set(re.findall(r"^class (\w+)", "\n".join(b for lang, _, b in blocks if lang == "python"), re.M))
        configs = [body for lang, _, body in blocks if lang == "yaml"]
        assert configs, f"{guide.name} shows no config"
        for body in configs:
            assert isinstance(yaml.safe_load(body), dict), f"{guide.name}: a config block is not a mapping"
        targets = {t.rsplit(".", 1)[-1] for body in configs for t in re.findall(r"_target_:\s*([\w.]+)", body)}
        assert targets & defined, f"{guide.name}: no config builds the class it defines ({sorted(defined)})"


def test_guide_code_runs(tmp_path: Path):
    pages = {}
    for guide in GUIDES:
        python = "\n\n".join(body for language, _, body in code_blocks(guide.read_text()) if language == "python")
        assert python, f"{guide.name} has no python example"
        pages[guide.stem] = python
    (tmp_path / "pages.json").write_text(json.dumps(pages))
    done = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path / "pages.json")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, POLYFUSE_ROOT=str(REPO)))
    assert done.returncode == 0, done.stderr[-4000:]
    failures = json.loads(done.stdout.rsplit("GUIDE-FAILURES ", 1)[1])
    assert not failures, "\n\n".join(f"docs/guides/{name}.md:\n{error}" for name, error in failures.items())

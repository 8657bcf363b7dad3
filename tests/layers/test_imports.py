"""``polyfuse.layers`` sits just above ``polyfuse.attention`` (which uses the bottom-level
``polyfuse.masking``): it imports nothing higher in the flow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import polyfuse.layers

LAYERS_DIR = Path(polyfuse.layers.__file__).parent
ALLOWED = ("polyfuse.attention", "polyfuse.layers", "polyfuse.masking")


def _polyfuse_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("polyfuse"):
            names |= {node.module} if node.module != "polyfuse" else {f"polyfuse.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("polyfuse")}
    return names


def test_layers_import_only_attention_and_themselves():
    files = sorted(LAYERS_DIR.glob("*.py"))
    assert len(files) >= 4
    upward = {f"{path.name}: {name}" for path in files for name in _polyfuse_imports(path)
              if not name.startswith(ALLOWED)}
    assert not upward, f"polyfuse.layers imports from above it: {sorted(upward)}"


def test_each_layers_module_imports_alone_in_a_fresh_interpreter():
    modules = ["polyfuse.layers"] + [f"polyfuse.layers.{p.stem}" for p in sorted(LAYERS_DIR.glob("*.py"))
                                     if p.stem != "__init__"] + ["polyfuse.attention.args"]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('polyfuse.')}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['attention', 'layers', 'masking']", result.stdout + result.stderr


def test_documented_old_paths_still_resolve():
    from polyfuse.attention import MultiHeadAttention
    from polyfuse.encoders.transformer import TransformerBlock

    assert MultiHeadAttention is polyfuse.layers.MultiHeadAttention
    assert TransformerBlock is polyfuse.layers.TransformerBlock

"""``polyfuse.encoders.build`` from one's own code: a fresh interpreter that imports only ``polyfuse.encoders``."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import sys
import torch
import polyfuse.encoders as encoders
from polyfuse.batch import ModalityInput

vit = encoders.build("vit", image_size=16, patch_size=8, in_chans=1, dim=16, depth=1, heads=2)
out = vit(ModalityInput(torch.zeros(2, 1, 16, 16)))
print(type(vit).__name__, tuple(out.tokens.shape), "polyfuse.heads" in sys.modules, "polyfuse.fusion" in sys.modules)
try:
    encoders.build("vitt")
except KeyError as error:
    print(error)
"""


def test_build_in_a_fresh_interpreter():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert first == "ViTEncoder (2, 5, 16) False False"     # [CLS] + 4 patches; no upward import
    assert "unknown encoder 'vitt'; available:" in second and "vit_timm" in second and "audio_cnn" in second

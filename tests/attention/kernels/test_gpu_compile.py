"""The kernels compile for Hopper and Ampere on a machine without a GPU (catches GPU-only errors such
as non-constexpr globals or type mismatches that the interpreter accepts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")


def _has_nvidia_backend() -> bool:
    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _has_nvidia_backend(), reason="Triton's NVIDIA backend (ptxas) is not installed")
def test_kernels_compile_for_sm90_and_sm80():
    """bf16, every switch on (mask, key lengths, causal, dropout), padded and packed, first autotuning config."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("compile_for_gpu.py")
    result = subprocess.run([sys.executable, str(script), "90", "80"], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" ok") == 12, result.stdout  # 3 kernels x padded/packed x 2 targets

"""Backend parameters shared by the attention tests.

The Triton kernels run on CPU tensors only in Triton's interpreter. ``conftest.py`` turns it on when
no GPU is visible; on a GPU machine the CPU parity tests of ``triton`` are skipped (run them with
``TRITON_INTERPRET=1 pytest tests/attention -m "not gpu"``) and ``test_gpu.py`` covers the kernels.
"""

from __future__ import annotations

import os

import pytest

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
needs_interpreter = pytest.mark.skipif(not INTERPRETING, reason="Triton on CPU tensors needs TRITON_INTERPRET=1")
TRITON = pytest.param("triton", marks=needs_interpreter)

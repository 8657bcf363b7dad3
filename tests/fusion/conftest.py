"""Fixtures for the fusion tests (helpers live in ``fusion_cases.py``)."""

from __future__ import annotations

from typing import Iterator

import pytest

from polyfuse import fusion
from polyfuse.attention import using_backend


@pytest.fixture(params=fusion.available())
def name(request: pytest.FixtureRequest) -> str:
    """Every registered fusion name."""
    return request.param


@pytest.fixture(autouse=True)
def fixed_attention_backend() -> Iterator[None]:
    """Exact-equality tests need one backend: ``auto`` may switch backends after timing a new shape."""
    with using_backend("sdpa"):
        yield

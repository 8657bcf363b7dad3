"""Fixtures for the fusion tests (helpers live in ``fusion_cases.py``)."""

from __future__ import annotations

import pytest

from polyfuse import fusion


@pytest.fixture(params=fusion.available())
def name(request: pytest.FixtureRequest) -> str:
    """Every registered fusion name."""
    return request.param

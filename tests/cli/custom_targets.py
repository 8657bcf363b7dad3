"""Test helper: a ``_target_`` outside the trusted modules that builds an ordinary polyfuse fusion."""

from __future__ import annotations

from typing import Any

from polyfuse.fusion import build


def concat_fusion(**options: Any) -> Any:
    """The ``concat`` fusion, reached through a module polyfuse does not trust by default."""
    return build("concat", **options)

"""Optional dependencies: imported where a feature needs them, with an error naming the pip extra.

``import polyfuse`` and the default training run need only the core dependencies
(pyproject.toml). A feature that needs more imports its package through :func:`import_optional`
inside the function or class that uses it, so that a missing package fails there, saying what to
install::

    pycocoevalcap = import_optional("pycocoevalcap", extra="captioning", feature="caption metrics")

The extras are listed in pyproject.toml and docs/install.md.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependencyError", "import_optional"]


class MissingDependencyError(ImportError):
    """An optional package a feature needs is not installed (the message names the pip extra)."""


def import_optional(module: str, *, extra: str, feature: str | None = None) -> ModuleType:
    """Import and return ``module``, or raise :class:`MissingDependencyError` naming ``polyfuse[extra]``.

    Args:
        module: the import name (``"pycocoevalcap"``, ``"open_clip"``).
        extra: the polyfuse extra that installs it (``"captioning"``, ``"clip"``).
        feature: what needs it, for the message (default: the module name).
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{feature or module} needs the optional package `{module}`, which cannot be imported ({error}); "
            f"install it with: pip install 'polyfuse[{extra}]'") from error

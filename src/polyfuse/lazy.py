"""Package attributes loaded on first use (PEP 562), for packages whose import must stay light.

A package lists ``{public name: submodule}`` and takes the module-level ``__getattr__`` and ``__dir__``
this returns: ``from polyfuse.training import PolyfuseLitModule`` imports ``polyfuse.training.module``
then, while ``import polyfuse.training.run_dir`` loads nothing else of the package.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, Mapping

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, names: Mapping[str, str], namespace: dict[str, Any]
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each of ``names`` is read from
    ``<package>.<names[name]>`` when first asked for; ``namespace`` is the package's ``globals()``."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__

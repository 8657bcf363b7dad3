"""polyfuse: a research training library for multimodal models."""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``polyfuse.load`` (:func:`polyfuse.inference.load`), imported on first use so that
    ``import polyfuse`` stays light."""
    if name == "load":
        from polyfuse.inference import load

        return load
    raise AttributeError(f"module 'polyfuse' has no attribute {name!r}")

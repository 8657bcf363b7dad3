"""polyfuse: a research training library for multimodal models."""

__version__ = "0.1.0"

"""Task heads: each owns its loss and metrics (see :class:`TaskHead`)."""

from polyfuse.heads.base import TaskHead
from polyfuse.heads.classification import ClassificationHead

__all__ = ["TaskHead", "ClassificationHead"]

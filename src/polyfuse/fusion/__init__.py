"""Fusion modules behind one interface.

>>> from polyfuse import fusion
>>> f = fusion.build("concat", dims={"image": 64, "text": 32}, out_dim=128)
>>> fusion.available()  # registered names
"""

from polyfuse.fusion.base import Fusion, FusionOutput, available, build, get_class, register
from polyfuse.fusion.concat import ConcatFusion

__all__ = ["Fusion", "FusionOutput", "available", "build", "get_class", "register", "ConcatFusion"]

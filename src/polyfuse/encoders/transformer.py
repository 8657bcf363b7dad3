"""Alias of the transformer layers' old home (they live in :mod:`polyfuse.layers` now).

Kept because ``polyfuse.encoders.transformer.TransformerBlock`` is a documented config path
(``trainer.strategy.unit_classes``, docs/scaling.md) that saved run configs may still name.
"""

from polyfuse.layers.transformer import TransformerBlock

__all__ = ["TransformerBlock"]

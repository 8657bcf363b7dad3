"""Models composed from encoders, fusion and heads."""

from polyfuse.models.multimodal import ModelOutput, MultimodalModel

__all__ = ["MultimodalModel", "ModelOutput"]

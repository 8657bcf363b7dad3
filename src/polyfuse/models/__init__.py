"""Models composed from encoders, fusion and heads."""

from polyfuse.models.multimodal import ModelOutput, MultimodalModel
from polyfuse.models.vilt import ViLT

__all__ = ["MultimodalModel", "ModelOutput", "ViLT"]

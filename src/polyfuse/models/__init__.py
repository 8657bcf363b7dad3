"""Models composed from encoders, fusion and heads."""

from polyfuse.models.clip import CLIP
from polyfuse.models.clip4clip import CLIP4Clip
from polyfuse.models.multimodal import ModelOutput, MultimodalModel
from polyfuse.models.multimodal_lm import MultimodalLM
from polyfuse.models.vilt import (ViLT, ViLTBase, ViLTConfig, ViLTForNLVR2, ViLTForRetrieval, ViLTForVQA, ViLTModel,
                                  ViLTOutput)

__all__ = ["MultimodalModel", "ModelOutput", "CLIP", "CLIP4Clip", "ViLT", "ViLTBase", "ViLTConfig", "ViLTModel", "ViLTForVQA",
           "ViLTForNLVR2", "ViLTForRetrieval", "ViLTOutput", "MultimodalLM"]

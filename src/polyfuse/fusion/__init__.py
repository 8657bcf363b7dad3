"""Fusion modules behind one interface, robust to modalities missing for some samples.

>>> from polyfuse import fusion
>>> f = fusion.build("cross_attention", dims={"image": 64, "text": 32}, out_dim=128)
>>> out = f({"image": image_encoded, "text": text_encoded}, return_attention=True)
>>> out.pooled, out.tokens, out.mask, out.attentions
>>> fusion.available()  # registered names (polyfuse.registry.Registry, shared with encoders and heads)

Every class is importable directly (``from polyfuse.fusion import CrossAttentionFusion``) and also
accepts plain tensors ``(B, L, D)`` / ``(B, D)``. See ``docs/fusions.md`` for the catalogue.
"""

from polyfuse.fusion.base import FUSIONS, Fusion, FusionOutput, available, build, get_class, register
from polyfuse.fusion.bilinear import BilinearFusion
from polyfuse.fusion.co_attention import CoAttentionFusion
from polyfuse.fusion.concat import ConcatFusion
from polyfuse.fusion.connectors import Connector, LinearConnector, MLPConnector
from polyfuse.fusion.cross_attention import CrossAttentionFusion
from polyfuse.fusion.early import EarlyFusion
from polyfuse.fusion.film import FiLMFusion
from polyfuse.fusion.gmu import GatedMultimodalUnit
from polyfuse.fusion.hybrid import HybridFusion
from polyfuse.fusion.late import LateFusion
from polyfuse.fusion.lmf import LowRankTensorFusion
from polyfuse.fusion.mbt import BottleneckFusion
from polyfuse.fusion.modality_dropout import ModalityDropout
from polyfuse.fusion.mult import MultimodalTransformer
from polyfuse.fusion.perceiver import PerceiverFusion
from polyfuse.fusion.qformer import QFormerConnector
from polyfuse.fusion.resampler import PerceiverResamplerConnector
from polyfuse.fusion.sum import MeanFusion, SumFusion
from polyfuse.fusion.tensor import TensorFusion
from polyfuse.fusion.translation import TranslationFusion

__all__ = [
    "Fusion", "FusionOutput", "FUSIONS", "available", "build", "get_class", "register", "ModalityDropout",
    "BilinearFusion", "BottleneckFusion", "CoAttentionFusion", "ConcatFusion", "CrossAttentionFusion", "EarlyFusion",
    "FiLMFusion", "GatedMultimodalUnit", "HybridFusion", "LateFusion", "LowRankTensorFusion", "MeanFusion",
    "MultimodalTransformer", "PerceiverFusion", "SumFusion", "TensorFusion", "TranslationFusion",
    "Connector", "LinearConnector", "MLPConnector", "PerceiverResamplerConnector", "QFormerConnector",
]

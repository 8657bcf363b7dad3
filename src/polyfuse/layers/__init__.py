"""Building blocks shared by every layer of polyfuse: encoders, fusions, heads and decoders.

As timm's ``layers/`` and TorchMultimodal's ``modules/layers/``: the attention module, the
transformer block, the MLP and its activations, the residual layer scale. This package sits just
above :mod:`polyfuse.attention` and imports nothing else from polyfuse, so anything higher in the
flow (``encoders/``, ``fusion/``, ``heads/``, ``models/``) may use it.

Attention maps are return values: :class:`MultiHeadAttention` and :class:`TransformerBlock`
return ``(out, probs)``, ``probs`` only when called with ``need_weights=True``; no layer keeps
per-call state.
"""

from polyfuse.layers.attention import MultiHeadAttention
from polyfuse.layers.mlp import ACTIVATIONS, Mlp, QuickGELU, make_activation
from polyfuse.layers.transformer import LayerScale, TransformerBlock

__all__ = ["MultiHeadAttention", "TransformerBlock", "Mlp", "LayerScale", "QuickGELU", "make_activation",
           "ACTIVATIONS"]

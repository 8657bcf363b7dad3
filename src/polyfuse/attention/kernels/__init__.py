"""Fused Triton attention kernels (forward, backward) behind ``backend="triton"``.

Imported lazily by :func:`polyfuse.attention.attention`, so that ``TRITON_INTERPRET=1`` set by a
test before the first use still selects Triton's CPU interpreter.
"""

from polyfuse.attention.kernels.dropout import dropout_keep_mask
from polyfuse.attention.kernels.function import FlashAttentionFunction, check_supported, triton_attention
from polyfuse.attention.kernels.tuning import interpreting
from polyfuse.attention.kernels.varlen import triton_varlen_attention  # also registers the packed custom ops

__all__ = ["FlashAttentionFunction", "check_supported", "dropout_keep_mask", "interpreting", "triton_attention",
           "triton_varlen_attention"]

"""The bucket keys ``auto`` keeps its choices under (:mod:`polyfuse.attention.auto`).

A key is the *case* (device, dtype, head dim, mask, causal, shape kind; grad and dropout) and
power-of-two buckets of the sizes. :class:`BucketKey` keys padded calls; packed calls use
:class:`polyfuse.attention.auto_varlen.PackedBucketKey`, which has the same methods (:class:`Key`).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import Tensor

__all__ = ["BucketKey", "Key", "bucket_key", "describe_case", "size_bucket"]


class Key(Protocol):
    """A bucket key: :class:`BucketKey` or :class:`polyfuse.attention.auto_varlen.PackedBucketKey`."""

    baseline: str
    oracle: str

    def case(self) -> tuple: ...
    def sizes(self) -> tuple[int, ...]: ...
    def parity_key(self) -> tuple: ...
    def describe(self) -> str: ...
    def describe_sizes(self) -> str: ...


class BucketKey(NamedTuple):
    """What a choice is kept for: the case, then power-of-two buckets of the sizes."""

    device: str
    dtype: torch.dtype
    needs_grad: bool
    has_mask: bool
    causal: bool
    dropout: bool
    head_dim: int
    shape_kind: str  # "self" (Lq == Lk), "q<k" or "q>k"
    batch_heads: int
    lq: int
    lk: int
    baseline = "sdpa"     # the default choice, beaten only by MARGIN (class attributes, not fields)
    oracle = "reference"  # always passes the probe: the last resort

    def case(self) -> tuple:
        """Everything but the sizes."""
        return tuple(self[:8])

    def sizes(self) -> tuple[int, int, int]:
        """The power-of-two buckets of B*H, Lq and Lk."""
        return (self.batch_heads, self.lq, self.lk)

    def parity_key(self) -> tuple:
        """The probe's key: what correctness can depend on (not grad, dropout or sizes)."""
        return (self.device, self.dtype, self.has_mask, self.causal, self.head_dim, self.shape_kind)

    def describe(self) -> str:
        """The case in words (warnings)."""
        return (f"{describe_case(self.device, self.dtype, self.head_dim)}, "
                f"{'masked' if self.has_mask else 'no mask'}{', causal' if self.causal else ''}, {self.shape_kind}")

    def describe_sizes(self) -> str:
        return f"B*H~{self.batch_heads}, Lq~{self.lq}, Lk~{self.lk}"


def size_bucket(n: int) -> int:
    """The power-of-two bucket of a size (the smallest power of two >= ``n``; 1 for ``n <= 1``)."""
    return 1 << max(0, (int(n) - 1).bit_length())


def describe_case(device: str, dtype: torch.dtype, head_dim: int) -> str:
    """How warnings name a case's device, dtype and head dim (``"cuda bfloat16, head dim 64"``)."""
    return f"{device} {str(dtype).replace('torch.', '')}, head dim {head_dim}"


def bucket_key(q: Tensor, k: Tensor, has_mask: bool, causal: bool, dropout_p: float, needs_grad: bool) -> BucketKey:
    """The cache key of a call (see module docstring)."""
    batch, heads, lq, head_dim = q.shape
    lk = k.shape[2]
    shape_kind = "self" if lq == lk else ("q<k" if lq < lk else "q>k")
    return BucketKey(q.device.type, q.dtype, needs_grad, has_mask, causal, dropout_p > 0.0, head_dim, shape_kind,
                     size_bucket(batch * heads), size_bucket(lq), size_bucket(lk))

"""The fusion interface: ``fusion({"image": Encoded, "text": Encoded}) -> FusionOutput``, and the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded
from polyfuse.masking import zero_invalid
from polyfuse.registry import Registry

__all__ = ["FusionOutput", "Fusion", "FUSIONS", "register", "build", "available", "get_class"]


@dataclass
class FusionOutput:
    """What every fusion returns.

    Attributes:
        pooled: ``(B, out_dim)``, always.
        tokens: ``(B, L, out_dim)`` for token-level fusions, else ``None``; zeros where ``mask`` is False.
        mask: ``(B, L)`` bool padding mask of ``tokens`` (``True`` = real), else ``None``.
        attentions: attention maps by name when requested (``return_attention=True``), else empty.
            Each map is ``(B, H, Lq, Lk)``; a row sums to 1 over the valid keys, or is all zeros
            when the query had no valid key (e.g. the modality it looks at is absent).
        aux_losses: named, already weighted scalar losses of the fusion's own auxiliary objective
            (e.g. the reconstruction loss of ``translation``), empty for most fusions; the training
            module adds them to the task loss and logs them as ``<stage>/aux/<name>``.
    """

    pooled: Tensor
    tokens: Tensor | None = None
    mask: Tensor | None = None
    attentions: dict[str, Tensor] = field(default_factory=dict)
    aux_losses: dict[str, Tensor] = field(default_factory=dict)


class Fusion(nn.Module):
    """Base class for fusion modules.

    Subclasses implement :meth:`fuse` on a complete, *sanitised* dict of :class:`Encoded` inputs
    (see :meth:`prepare`), one per modality in :attr:`modalities`, in the order of ``dims``. The
    base accepts plain tensors ``(B, D)``/``(B, L, D)`` and treats a modality missing from the input
    dict as absent for every sample.

    Args:
        dims: modality name -> input width ``D`` of its tokens.
        out_dim: width of the fused output.

    Class attributes:
        min_modalities: the fewest modalities the method is defined for (checked on ``dims``).
        registry_name: the name the class is registered under (set by :func:`register`).
    """

    min_modalities: int = 1
    registry_name: str = ""

    def __init__(self, dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__()
        if len(dims) < self.min_modalities:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_modalities} modalities, got {list(dims)}")
        bad = {name: dim for name, dim in dims.items() if int(dim) <= 0}
        if bad or out_dim <= 0:
            raise ValueError(f"{type(self).__name__}: widths must be positive, got dims={dict(dims)}, out_dim={out_dim}")
        self.dims = {name: int(dim) for name, dim in dims.items()}
        self.modalities = list(self.dims)
        self.out_dim = int(out_dim)

    def forward(self, inputs: Mapping[str, Encoded | Tensor], return_attention: bool = False) -> FusionOutput:
        """Fuse ``inputs`` (modality -> :class:`Encoded` or tokens ``(B, L, D)``/``(B, D)``)."""
        return self.fuse(self.prepare(inputs), return_attention=return_attention)

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        raise NotImplementedError

    def prepare(self, inputs: Mapping[str, Encoded | Tensor]) -> dict[str, Encoded]:
        """Validate inputs and put them in the form every :meth:`fuse` relies on.

        For each modality of :attr:`modalities` (in order) the result holds an :class:`Encoded` with

        * ``mask`` materialised as the *valid* mask ``mask & present`` (padding and absent samples False),
        * ``present`` materialised, and False for a sample with no real token at all,
        * ``tokens`` set to exactly zero wherever ``mask`` is False (``torch.where``, so NaN/inf garbage
          in padded or absent slots cannot leak through ``0 * x``).

        A modality missing from ``inputs`` becomes one masked token per sample, absent everywhere.
        """
        unknown = [name for name in inputs if name not in self.dims]
        if unknown:
            raise KeyError(f"{type(self).__name__} got unknown modalities {unknown}; it was built for {self.modalities}")
        encoded = {name: value if isinstance(value, Encoded) else Encoded(value) for name, value in inputs.items()}
        if not encoded:
            raise ValueError(f"{type(self).__name__} got no modality; expected some of {self.modalities}")
        first_name, first = next(iter(encoded.items()))
        batch, device = first.batch_size, first.tokens.device
        for name, value in encoded.items():
            if value.dim != self.dims[name]:
                raise ValueError(f"{type(self).__name__}: modality {name!r} has width {value.dim}, "
                                 f"expected {self.dims[name]} (from dims)")
            if value.batch_size != batch:
                raise ValueError(f"{type(self).__name__}: modality {name!r} has batch size {value.batch_size}, "
                                 f"but {first_name!r} has {batch}")
        prepared = {}
        for name in self.modalities:
            if name not in encoded:
                tokens = first.tokens.new_zeros(batch, 1, self.dims[name])
                absent = torch.zeros(batch, dtype=torch.bool, device=device)
                prepared[name] = Encoded(tokens, absent[:, None], absent)
                continue
            value = encoded[name]
            valid = value.valid_mask()
            present = valid.any(dim=1)
            prepared[name] = Encoded(zero_invalid(value.tokens, valid), valid, present)
        return prepared

    def extra_repr(self) -> str:
        return f"dims={self.dims}, out_dim={self.out_dim}"


FUSIONS: Registry[type[Fusion]] = Registry("fusion")
"""The fusion registry (:class:`polyfuse.registry.Registry`, shared with encoders and heads); ``register``,
``available``, ``get_class`` and ``build`` below are its public face."""
register = FUSIONS.register
"""Decorator: ``@register("<name>")`` makes a fusion buildable by name."""
available = FUSIONS.available
"""The registered fusion names, sorted."""
get_class = FUSIONS.get
"""The fusion registered under a name; a KeyError listing the valid names otherwise."""


def build(name: str, dims: Mapping[str, int], out_dim: int, **options: Any) -> Fusion:
    """Instantiate a registered fusion: ``build("concat", dims={"image": 192, "text": 128}, out_dim=256)``."""
    return FUSIONS.build(name, dims=dims, out_dim=out_dim, **options)

"""The fusion interface: ``fusion({"image": Encoded, "text": Encoded}) -> FusionOutput``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, TypeVar

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded

__all__ = ["FusionOutput", "Fusion", "register", "build", "available", "get_class"]


@dataclass
class FusionOutput:
    """What every fusion returns.

    Attributes:
        pooled: ``(B, out_dim)``, always.
        tokens: ``(B, L, out_dim)`` for token-level fusions, else ``None``.
        mask: ``(B, L)`` bool padding mask of ``tokens`` (``True`` = real), else ``None``.
        attentions: attention maps by name when requested (``return_attention=True``), else empty.
    """

    pooled: Tensor
    tokens: Tensor | None = None
    mask: Tensor | None = None
    attentions: dict[str, Tensor] = field(default_factory=dict)


class Fusion(nn.Module):
    """Base class for fusion modules.

    Subclasses implement :meth:`fuse` on a complete dict of :class:`Encoded` inputs, one per
    modality in :attr:`modalities`. The base accepts plain tensors ``(B, D)``/``(B, L, D)`` and
    treats a modality missing from the input dict as absent for every sample.

    Args:
        dims: modality name -> input width ``D`` of its tokens.
        out_dim: width of the fused output.
        min_modalities: the fewest modalities the method supports.
    """

    min_modalities = 1

    def __init__(self, dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__()
        if len(dims) < self.min_modalities:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_modalities} modalities, got {list(dims)}")
        self.dims = dict(dims)
        self.modalities = list(dims)
        self.out_dim = out_dim

    def forward(self, inputs: Mapping[str, Encoded | Tensor], return_attention: bool = False) -> FusionOutput:
        return self.fuse(self.prepare(inputs), return_attention=return_attention)

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        raise NotImplementedError

    def prepare(self, inputs: Mapping[str, Encoded | Tensor]) -> dict[str, Encoded]:
        """Validate inputs and fill in modalities that are missing from the dict as absent."""
        unknown = [name for name in inputs if name not in self.dims]
        if unknown:
            raise KeyError(f"{type(self).__name__} got unknown modalities {unknown}; it was built for {self.modalities}")
        encoded = {name: value if isinstance(value, Encoded) else Encoded(value) for name, value in inputs.items()}
        if not encoded:
            raise ValueError(f"{type(self).__name__} got no modality; expected some of {self.modalities}")
        reference = next(iter(encoded.values())).tokens
        for name, value in encoded.items():
            if value.dim != self.dims[name]:
                raise ValueError(f"modality {name!r}: expected width {self.dims[name]}, got {value.dim}")
        for name in self.modalities:
            if name not in encoded:
                batch = reference.shape[0]
                encoded[name] = Encoded(reference.new_zeros(batch, 1, self.dims[name]),
                                        torch.zeros(batch, 1, dtype=torch.bool, device=reference.device),
                                        torch.zeros(batch, dtype=torch.bool, device=reference.device))
        return {name: encoded[name] for name in self.modalities}


_REGISTRY: dict[str, type[Fusion]] = {}
FusionT = TypeVar("FusionT", bound=type[Fusion])


def register(name: str) -> Callable[[FusionT], FusionT]:
    """Class decorator: make a fusion buildable as ``fusion.build(name, ...)``."""
    def wrap(cls: FusionT) -> FusionT:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"fusion {name!r} is already registered by {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls
    return wrap


def available() -> list[str]:
    """Registered fusion names, sorted."""
    return sorted(_REGISTRY)


def get_class(name: str) -> type[Fusion]:
    if name not in _REGISTRY:
        raise KeyError(f"unknown fusion {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def build(name: str, dims: Mapping[str, int], out_dim: int, **options) -> Fusion:
    """Instantiate a registered fusion: ``build("concat", dims={"image": 192, "text": 128}, out_dim=256)``."""
    return get_class(name)(dims=dims, out_dim=out_dim, **options)

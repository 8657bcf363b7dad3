"""Connectors: fusions that map each modality's encoder tokens into a language model's embedding space.

A connector is a :class:`~polyfuse.fusion.base.Fusion` whose output stays per modality:
:meth:`Connector.connect` returns ``{modality: Encoded (B, N_m, out_dim)}`` so that
:class:`~polyfuse.models.MultimodalLM` can splice each modality's tokens at its own placeholder
(``<image>``, ``<audio>``) in the text. The generic :meth:`Connector.fuse` concatenates them
(``tokens``: every modality's tokens in ``dims`` order; ``pooled``: their masked mean), so a
connector also works wherever a fusion does.

This file: the token-wise projectors of LLaVA (Liu, Li, Wu & Lee, "Visual Instruction Tuning",
NeurIPS 2023: one linear layer) and LLaVA-1.5 (Liu, Li, Li & Lee, "Improved Baselines with Visual
Instruction Tuning", CVPR 2024: a 2-layer MLP with GELU). Both keep the number of tokens and their
padding mask. The resampling connectors (a fixed number of output tokens) are in
:mod:`polyfuse.fusion.resampler` (Perceiver resampler) and :mod:`polyfuse.fusion.qformer` (Q-Former).

Missing modalities: ``present`` travels unchanged; an absent sample's tokens are zeros and all its
mask is ``False`` (the model splices no token for it).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.masking import zero_invalid

__all__ = ["Connector", "LinearConnector", "MLPConnector"]


class Connector(Fusion):
    """Base class: :meth:`project` maps one modality's sanitised tokens to ``out_dim`` (the LM width).

    Subclasses implement ``project(name, tokens (B, L, D_m), mask (B, L)) -> (tokens (B, N, out_dim),
    mask (B, N))``; the base sanitises inputs (:meth:`Fusion.prepare`), zeroes absent samples and
    keeps ``present``.
    """

    def project(self, name: str, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def connect(self, inputs: Mapping[str, Encoded | Tensor]) -> dict[str, Encoded]:
        """``{m: Encoded (B, L_m, D_m)}`` -> ``{m: Encoded (B, N_m, out_dim)}`` for the modalities given."""
        prepared = self.prepare(inputs)
        out = {}
        for name in inputs:
            value = prepared[name]
            tokens, mask = self.project(name, value.tokens, value.mask)
            present = value.present
            mask = mask & present[:, None]
            out[name] = Encoded(zero_invalid(tokens, mask), mask, present)
        return out

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        connected = self.connect(inputs)
        tokens = torch.cat([connected[m].tokens for m in self.modalities], dim=1)
        mask = torch.cat([connected[m].mask for m in self.modalities], dim=1)
        return FusionOutput(pooled=Encoded(tokens, mask).pooled(), tokens=tokens, mask=mask)


@register("linear_connector")
class LinearConnector(Connector):
    """One ``Linear(D_m, out_dim)`` per modality applied to every token (LLaVA, Liu et al. 2023).

    Padding and missing modalities: token count and padding mask are kept; an absent sample's
    tokens are zeros and fully masked.

    Args:
        dims: modality -> encoder width. out_dim: the language model's hidden size. bias: projection bias.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, bias: bool = True) -> None:
        super().__init__(dims, out_dim)
        self.proj = nn.ModuleDict({m: nn.Linear(d, out_dim, bias=bias) for m, d in self.dims.items()})

    def project(self, name: str, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.proj[name](tokens), mask


class TwoLayerMLP(nn.Module):
    """``linear_2(act(linear_1(x)))``: the LLaVA-1.5 projector (names as in HF's ``LlavaMultiModalProjector``)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None, bias: bool = True,
                 activation: str = "gelu") -> None:
        super().__init__()
        hidden = hidden or out_dim
        activations = {"gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"), "relu": nn.ReLU(),
                       "silu": nn.SiLU()}
        if activation not in activations:
            raise ValueError(f"MLP connector activation must be one of {sorted(activations)}, got {activation!r}")
        self.linear_1 = nn.Linear(in_dim, hidden, bias=bias)
        self.act = activations[activation]
        self.linear_2 = nn.Linear(hidden, out_dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


@register("mlp_connector")
class MLPConnector(Connector):
    """Per-modality 2-layer MLP ``Linear -> GELU -> Linear`` on every token (LLaVA-1.5, Liu et al. 2024).

    Padding and missing modalities: as :class:`LinearConnector` (tokens kept, absent samples masked).

    Args:
        dims: modality -> encoder width. out_dim: the language model's hidden size.
        hidden: MLP width (default ``out_dim``, as LLaVA-1.5). bias: linear biases.
        activation: ``gelu`` (exact, LLaVA's default), ``gelu_tanh``, ``relu`` or ``silu``.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, hidden: int | None = None, bias: bool = True,
                 activation: str = "gelu") -> None:
        super().__init__(dims, out_dim)
        self.mlp = nn.ModuleDict({m: TwoLayerMLP(d, out_dim, hidden, bias, activation) for m, d in self.dims.items()})

    def project(self, name: str, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.mlp[name](tokens), mask

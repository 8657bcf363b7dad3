"""Low-rank Multimodal Fusion: tensor fusion with the weight tensor factorised per modality."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.tensor import ModalitySubnet, embed_with_one


@register("lmf")
class LowRankTensorFusion(Fusion):
    """LMF: ``z = sum_{i=1}^r w_i prod_m (W_m^{(i)} [h_m; 1]) + b``.

    Liu, Shen, Lakshminarasimhan, Liang, Zadeh & Morency, "Efficient Low-rank Multimodal Fusion
    with Modality-Specific Factors", ACL 2018. It equals a :class:`TensorFusion` whose linear layer
    on the outer product has rank ``r``, without ever building the tensor: cost is linear in the
    number of modalities. The factors ``W_m: (r, d_m + 1, out_dim)`` are registered
    ``nn.Parameter``\\ s in an ``nn.ParameterDict`` (MultiBench's ``LowRankTensorFusion`` kept them in
    a Python list, so they were never trained; our tests check every parameter gets a gradient).
    Any number of modalities.

    Missing modalities: as in TFN, an absent modality's ``h_m`` is 0, so ``[h_m; 1] = e_last`` and its
    factor contributes only its learned last row ``W_m^{(i)}[-1]`` -- a learned per-modality
    stand-in that never reads the absent values.

    Args:
        dims, out_dim: see :class:`Fusion`. rank: ``r``. hidden_per_modality: size of each ``h_m``.
        dropout: on ``h_m``.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, rank: int = 4, hidden_per_modality: int = 32,
                 dropout: float = 0.1) -> None:
        super().__init__(dims, out_dim)
        self.rank = rank
        self.subnets = nn.ModuleDict({m: ModalitySubnet(d, hidden_per_modality, dropout) for m, d in self.dims.items()})
        self.factors = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(rank, hidden_per_modality + 1, out_dim)) for m in self.dims})
        self.rank_weights = nn.Parameter(torch.empty(1, rank))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        for factor in self.factors.values():
            nn.init.xavier_normal_(factor)
        nn.init.xavier_normal_(self.rank_weights)

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        product: Tensor | None = None
        for name, encoded in inputs.items():
            v = embed_with_one(self.subnets[name], encoded)  # (B, d + 1)
            projected = torch.einsum("bd,rdo->rbo", v, self.factors[name])  # (r, B, out)
            product = projected if product is None else product * projected
        assert product is not None
        return FusionOutput(pooled=torch.einsum("r,rbo->bo", self.rank_weights[0], product) + self.bias)

"""Early (single-stream) fusion: one transformer over the concatenated tokens of every modality."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded
from polyfuse.encoders.transformer import TransformerBlock
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.blocks import ModalityProjection, run_blocks
from polyfuse.fusion.masking import zero_invalid


@register("early")
class EarlyFusion(Fusion):
    """Single-stream transformer over ``[CLS; x_1 + t_1; [MISS_1]; ...; x_M + t_M; [MISS_M]]``.

    Every modality's tokens are projected to ``width``, tagged with a learned modality-type
    embedding ``t_m`` and concatenated with a [CLS] token; ``depth`` pre-norm transformer blocks
    attend over the whole sequence. VL-BERT (Su et al., "VL-BERT: Pre-training of Generic
    Visual-Linguistic Representations", ICLR 2020) and ViLT (Kim, Son & Kim, "ViLT:
    Vision-and-Language Transformer Without Convolution or Region Supervision", ICML 2021).
    ``pooled`` is the [CLS] output (the ViLT pooler: Linear + tanh on a final LayerNorm), ``tokens``
    the whole sequence. Any number of modalities.

    Padding: padded tokens are masked as keys; their (masked) outputs are zero.

    Missing modalities: an absent modality's tokens are masked out of attention, and a learned
    per-modality [MISS_m] token -- valid only when modality ``m`` is absent -- takes their place,
    so the model sees *which* modality is missing (the learned-missing-token strategy of Ma et
    al., "Are Multimodal Transformers Robust to Missing Modality?", CVPR 2022).

    Attention maps: ``"joint/layer{i}"``, ``(B, H, L, L)`` over the sequence above.

    Args:
        dims, out_dim: see :class:`Fusion`. width: transformer width (default ``out_dim``).
        depth: number of blocks. heads: attention heads. mlp_ratio, dropout: block options.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, width: int | None = None, depth: int = 2,
                 heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.1) -> None:
        super().__init__(dims, out_dim)
        width = width or out_dim
        self.project = ModalityProjection(self.dims, width)
        self.cls = nn.Parameter(torch.randn(width) * 0.02)
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(width) * 0.02) for m in self.dims})
        self.blocks = nn.ModuleList([TransformerBlock(width, heads, mlp_ratio, dropout, norm="pre")
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.pooler = nn.Sequential(nn.Linear(width, out_dim), nn.Tanh())
        self.out = nn.Linear(width, out_dim)

    def sequence(self, inputs: dict[str, Encoded]) -> tuple[Tensor, Tensor]:
        """The joint input sequence ``(B, 1 + sum_m (L_m + 1), width)`` and its mask."""
        projected = self.project(inputs)
        batch = next(iter(projected.values())).shape[0]
        parts = [self.cls.expand(batch, 1, -1)]
        masks = [torch.ones(batch, 1, dtype=torch.bool, device=self.cls.device)]
        for name, encoded in inputs.items():
            parts += [projected[name], self.missing[name].expand(batch, 1, -1)]
            masks += [encoded.mask, ~encoded.present_or_full()[:, None]]
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        x, mask = self.sequence(inputs)
        x, maps = run_blocks(self.blocks, x, mask, "joint/layer{i}", return_attention)
        x = self.norm(x)
        tokens = zero_invalid(self.out(x), mask)
        return FusionOutput(pooled=self.pooler(x[:, 0]), tokens=tokens, mask=mask, attentions=maps)

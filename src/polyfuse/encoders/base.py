"""What every polyfuse encoder shares: the output contract, pooling, projection, freezing."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from polyfuse.batch import Encoded, ModalityInput

Output = Literal["tokens", "pooled"]


class Encoder(nn.Module):
    """Base class: subclasses implement :meth:`encode` returning ``(tokens (B, L, D), mask (B, L))``.

    The base turns that into an :class:`~polyfuse.batch.Encoded` with the modality's presence,
    optionally pooled to one token (``output="pooled"``: the first/CLS token when the encoder has
    one, else the masked mean) and projected to ``proj_dim``. :attr:`out_dim` is the final width.

    Args:
        width: the encoder's own token width.
        output: ``"tokens"`` (sequence) or ``"pooled"`` (one token per sample).
        proj_dim: linear projection of every token to this width (``None`` = no projection).
        has_cls: the first token is a summary ([CLS]) token used for pooling.
    """

    def __init__(self, width: int, output: Output = "tokens", proj_dim: int | None = None,
                 has_cls: bool = False) -> None:
        super().__init__()
        if output not in ("tokens", "pooled"):
            raise ValueError(f"encoder output must be 'tokens' or 'pooled', got {output!r}")
        self.width, self.output, self.has_cls = width, output, has_cls
        self.proj = nn.Linear(width, proj_dim) if proj_dim else nn.Identity()
        self.out_dim = proj_dim or width

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def forward(self, inputs: ModalityInput | Tensor) -> Encoded:
        if isinstance(inputs, Tensor):
            inputs = ModalityInput(inputs)
        tokens, mask = self.encode(inputs.values, inputs.mask)
        present = inputs.present
        if self.output == "pooled":
            if self.has_cls:
                tokens = tokens[:, :1]
            else:
                tokens = Encoded(tokens, mask).pooled().unsqueeze(1)
            mask = None
        tokens = self.proj(tokens)
        if present is not None:  # absent samples carry zeros, never garbage from their inputs
            tokens = tokens * present[:, None, None].to(tokens.dtype)
        return Encoded(tokens, mask, present)

    def freeze(self, blocks: int | bool = True) -> None:
        """Freeze every parameter (``True``) or the embeddings and first ``blocks`` blocks (int)."""
        if blocks is True:
            for p in self.parameters():
                p.requires_grad_(False)
            return
        if blocks is False or blocks == 0:
            return
        for module in self.stem_modules():
            for p in module.parameters():
                p.requires_grad_(False)
        for block in list(self.blocks_for_freezing())[: int(blocks)]:
            for p in block.parameters():
                p.requires_grad_(False)

    def stem_modules(self) -> list[nn.Module]:
        """Modules before the first block (embeddings); frozen with any partial freeze."""
        return []

    def blocks_for_freezing(self) -> list[nn.Module]:
        return []


def masked_zero(values: Tensor, mask: Tensor | None) -> Tensor:
    """Zero padded positions of ``values: (B, L, ...)`` so their content cannot leak."""
    if mask is None:
        return values
    shape = mask.shape + (1,) * (values.dim() - mask.dim())
    return values * mask.view(shape).to(values.dtype)


def checkpointed(module: nn.Module, enabled: bool, *args: Tensor, **kwargs) -> Tensor:
    """Run ``module`` under activation checkpointing when ``enabled`` and training."""
    if enabled and module.training and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(module, *args, use_reentrant=False, **kwargs)
    return module(*args, **kwargs)

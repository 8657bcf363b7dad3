"""What every polyfuse encoder shares: the output contract, pooling, projection, freezing."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from polyfuse.batch import Encoded, ModalityInput
from polyfuse.checkpointing import checkpointing_enabled, set_grad_checkpointing
from polyfuse.masking import masked_mean, zero_invalid

Output = Literal["tokens", "pooled"]


class Encoder(nn.Module):
    """Base class: subclasses implement :meth:`encode` returning ``(tokens (B, L, D), mask (B, L))``.

    The base turns that into an :class:`~polyfuse.batch.Encoded` with the modality's presence,
    optionally pooled to one token (``output="pooled"``, see :meth:`pool_tokens`) and projected to
    ``proj_dim``. :attr:`out_dim` is the final width. Masking follows :mod:`polyfuse.masking`:
    padded positions and absent samples (``present=False``) of the input are read as zeros, and
    absent samples come out as zeros, never as features of whatever their slot held.

    Args:
        width: the encoder's own token width.
        output: ``"tokens"`` (sequence) or ``"pooled"`` (one token per sample).
        proj_dim: linear projection of every token to this width (``None`` = no projection).
        has_cls: the first token is a summary ([CLS]) token.
        pool: ``"cls"`` (first token) or ``"mean"`` (masked mean over all real tokens, as
            sentence-transformers does; the ViT overrides it to skip its prefix); ``None`` picks
            ``"cls"`` when ``has_cls`` else ``"mean"``. Subclasses may accept more kinds.
        proj_bias: whether the projection has a bias (CLIP's projections do not).
    """

    pool_kinds: tuple[str, ...] = ("cls", "mean")
    #: the modality this encoder reads (set by the model that holds it), for error messages
    modality: str | None = None

    def __init__(self, width: int, output: Output = "tokens", proj_dim: int | None = None,
                 has_cls: bool = False, pool: str | None = None, proj_bias: bool = True) -> None:
        super().__init__()
        if output not in ("tokens", "pooled"):
            raise ValueError(f"encoder output must be 'tokens' or 'pooled', got {output!r}")
        pool = ("cls" if has_cls else "mean") if pool is None else pool
        if pool not in self.pool_kinds:
            raise ValueError(f"{type(self).__name__} pool must be one of {self.pool_kinds}, got {pool!r}")
        if pool == "cls" and not has_cls:
            raise ValueError(f"{type(self).__name__} has no [CLS] token to pool; use pool='mean'")
        self.width, self.output, self.has_cls, self.pool = width, output, has_cls, pool
        self.proj = nn.Linear(width, proj_dim, bias=proj_bias) if proj_dim else nn.Identity()
        self.out_dim = proj_dim or width

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``values`` (modality-specific) + padding mask -> ``(tokens (B, L, width), mask (B, L) | None)``."""
        raise NotImplementedError

    def input_name(self) -> str:
        """How errors name this encoder's input: its :attr:`modality`, else its class."""
        return self.modality if self.modality is not None else f"{type(self).__name__} input"

    def pool_tokens(self, tokens: Tensor, mask: Tensor | None, values: Tensor) -> Tensor:
        """``(B, L, D)`` tokens -> ``(B, 1, D)`` by :attr:`pool` (``values`` are the raw inputs)."""
        if self.pool == "cls":
            return tokens[:, :1]
        return masked_mean(tokens, mask).unsqueeze(1)

    def forward(self, inputs: ModalityInput | Tensor) -> Encoded:
        """A :class:`ModalityInput` (or a bare tensor, all real and present) -> :class:`Encoded`."""
        if isinstance(inputs, Tensor):
            inputs = ModalityInput(inputs)
        present = inputs.present
        # padded positions and absent samples are read as zeros: no garbage reaches encode (nor
        # batch-norm statistics), whatever the collate left there
        values = zero_invalid(zero_invalid(inputs.values, inputs.mask), present)
        tokens, mask = self.encode(values, inputs.mask)
        if self.output == "pooled":
            tokens, mask = self.pool_tokens(tokens, mask, values), None
        tokens = zero_invalid(self.proj(tokens), present)  # absent samples carry zeros
        return Encoded(tokens, mask, present)

    def freeze(self, blocks: int | bool = True) -> None:
        """Freeze every parameter (``True``) or the embeddings and first ``blocks`` blocks (int).

        Batch-norm layers whose parameters are all frozen also stop updating their running
        statistics (they stay in eval mode under ``.train()``), so a frozen block computes what
        the checkpoint computed.
        """
        if blocks is True:
            for p in self.parameters():
                p.requires_grad_(False)
        elif blocks is not False and blocks != 0:
            for module in self.stem_modules():
                for p in module.parameters():
                    p.requires_grad_(False)
            for block in list(self.blocks_for_freezing())[: int(blocks)]:
                for p in block.parameters():
                    p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "Encoder":
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                params = list(module.parameters(recurse=False))
                if params and not any(p.requires_grad for p in params):
                    module.eval()
        return self

    def stem_modules(self) -> list[nn.Module]:
        """Modules before the first block (embeddings); frozen with any partial freeze."""
        return []

    def blocks_for_freezing(self) -> list[nn.Module]:
        """The encoder's blocks in input-to-output order (``freeze(N)`` freezes the first N)."""
        return []

    def checkpoint_blocks(self) -> list[nn.Module]:
        """The blocks :meth:`encode` runs through :func:`polyfuse.checkpointing.checkpointed` (none by
        default; the transformer encoders: every block)."""
        return []

    @property
    def grad_checkpointing(self) -> bool:
        """Whether every block is recomputed in backward (:mod:`polyfuse.checkpointing`); settable."""
        return checkpointing_enabled(self)

    @grad_checkpointing.setter
    def grad_checkpointing(self, enable: bool) -> None:
        set_grad_checkpointing(self, enable)

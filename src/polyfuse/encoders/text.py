"""BERT-style text encoder (Devlin et al., 2019): token + position + type embeddings, post-norm blocks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.encoders.base import Encoder, Output, checkpointed
from polyfuse.encoders.transformer import TransformerBlock


class TextEmbeddings(nn.Module):
    """``word + position + token_type`` embeddings, LayerNorm, dropout (HF ``BertEmbeddings`` layout)."""

    def __init__(self, vocab_size: int, dim: int, max_length: int, type_vocab_size: int = 2,
                 pad_token_id: int = 0, eps: float = 1e-12, dropout: float = 0.0) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_length, dim)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.max_length = max_length

    def forward(self, token_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        length = token_ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"text of {length} tokens exceeds the encoder's max_length {self.max_length}")
        positions = torch.arange(length, device=token_ids.device)
        types = torch.zeros_like(token_ids) if token_type_ids is None else token_type_ids
        x = self.word_embeddings(token_ids) + self.position_embeddings(positions)[None] + self.token_type_embeddings(types)
        return self.dropout(self.LayerNorm(x))


class TextTransformerEncoder(Encoder):
    """BERT-style encoder over token ids ``(B, L)`` with padding mask ``(B, L)``.

    Padded tokens are masked as attention keys, so changing them changes no real token's output;
    their own outputs are zeroed. Pooling uses the first ([CLS]) token.

    Args:
        vocab_size, max_length: vocabulary and position table sizes. dim, depth, heads, mlp_ratio.
        output: ``"tokens"`` or ``"pooled"``; proj_dim: optional projection.
    """

    def __init__(self, vocab_size: int = 128, max_length: int = 32, dim: int = 64, depth: int = 2,
                 heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0, type_vocab_size: int = 2,
                 pad_token_id: int = 0, eps: float = 1e-12, output: Output = "tokens",
                 proj_dim: int | None = None, grad_checkpointing: bool = False,
                 freeze: int | bool = False, attention_backend: str | None = None) -> None:
        super().__init__(dim, output, proj_dim, has_cls=True)
        self.embeddings = TextEmbeddings(vocab_size, dim, max_length, type_vocab_size, pad_token_id, eps, dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio, dropout, norm="post", eps=eps, backend=attention_backend)
            for _ in range(depth))
        self.grad_checkpointing = grad_checkpointing
        self.freeze(freeze)

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if values.dim() != 2 or values.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"TextTransformerEncoder expects token ids (B, L) int64, got {tuple(values.shape)} {values.dtype}")
        x = self.embeddings(values.long())
        for block in self.blocks:
            x = checkpointed(block, self.grad_checkpointing, x, mask)
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        return x, mask

    def stem_modules(self) -> list[nn.Module]:
        return [self.embeddings]

    def blocks_for_freezing(self) -> list[nn.Module]:
        return list(self.blocks)

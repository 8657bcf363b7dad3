"""BERT-style text encoder (Devlin et al., 2019): token + position + type embeddings, post-norm blocks."""

from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from torch import Tensor, nn

from polyfuse.encoders.base import Output
from polyfuse.encoders.transformer import TransformerEncoder
from polyfuse.layers import TransformerBlock
from polyfuse.masking import zero_invalid

PositionIds = Literal["absolute", "from_mask"]


class TextEmbeddings(nn.Module):
    """``word + position + token_type`` embeddings, LayerNorm, dropout (HF ``BertEmbeddings`` layout).

    ``position_ids="absolute"`` numbers tokens ``offset, offset + 1, ...`` (BERT);
    ``"from_mask"`` counts real tokens only, padding gets ``offset - 1`` (RoBERTa, whose
    ``offset = pad_token_id + 1``). ``type_vocab_size=0`` drops the type table (DistilBERT).

    Packed (:meth:`forward_packed`): only the real tokens are looked up, ``(T,)`` ids -> ``(T, D)``;
    each token's position is its index in its sample, which for a prefix mask is what both position
    kinds give it in the padded layout.
    """

    def __init__(self, vocab_size: int, dim: int, max_length: int, type_vocab_size: int = 2,
                 pad_token_id: int = 0, eps: float = 1e-12, dropout: float = 0.0,
                 position_ids: PositionIds = "absolute", position_offset: int = 0) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_length, dim)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, dim) if type_vocab_size else None
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        if position_ids not in ("absolute", "from_mask"):
            raise ValueError(f"position_ids must be 'absolute' or 'from_mask', got {position_ids!r}")
        self.max_length, self.position_ids, self.position_offset = max_length, position_ids, position_offset

    def forward(self, token_ids: Tensor, token_type_ids: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        """``token_ids: (B, L)`` (+ optional types and padding mask ``(B, L)``) -> ``(B, L, D)``."""
        length = token_ids.shape[1]
        if length + self.position_offset > self.max_length:
            raise ValueError(f"text of {length} tokens exceeds the encoder's max_length "
                             f"{self.max_length - self.position_offset}")
        if self.position_ids == "from_mask" and mask is not None:
            real = mask.long()
            positions = torch.cumsum(real, dim=1) * real + (self.position_offset - 1)
        else:
            positions = torch.arange(length, device=token_ids.device)[None] + self.position_offset
        return self._embed(token_ids, positions, token_type_ids)

    def forward_packed(self, token_ids: Tensor, positions: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Packed token ids ``(T,)`` at ``positions (T,)`` (each token's index in its own sample) -> ``(T, D)``."""
        if positions.numel() and int(positions.max()) + self.position_offset >= self.max_length:
            raise ValueError(f"a packed text position {int(positions.max())} exceeds the encoder's max_length "
                             f"{self.max_length - self.position_offset}")
        return self._embed(token_ids, positions + self.position_offset, token_type_ids)

    def _embed(self, token_ids: Tensor, positions: Tensor, token_type_ids: Tensor | None) -> Tensor:
        x = self.word_embeddings(token_ids) + self.position_embeddings(positions)
        if self.token_type_embeddings is not None:
            types = torch.zeros_like(token_ids) if token_type_ids is None else token_type_ids
            x = x + self.token_type_embeddings(types)
        return self.dropout(self.LayerNorm(x))


class TextTransformerEncoder(TransformerEncoder):
    """BERT-style encoder over token ids ``(B, L)`` with padding mask ``(B, L)``.

    Padded tokens are masked as attention keys, so changing them changes no real token's output;
    their own outputs are zeroed. With ``packing=True`` the padding is never computed on: the real
    tokens are gathered before the embedding lookup, every block runs on ``(T, D)`` and the output
    is padded back once (:class:`~polyfuse.encoders.transformer.TransformerEncoder`); the result
    equals the padded path's. Pooling uses the first ([CLS]) token or the masked mean
    (sentence-transformers models such as MiniLM). Hugging Face BERT, RoBERTa and DistilBERT
    checkpoints load through :func:`polyfuse.encoders.pretrained.encoder_from_hf`.

    Args:
        vocab_size, max_length: vocabulary and position table sizes. dim, depth, heads, mlp_ratio.
        output: ``"tokens"`` or ``"pooled"``; pool: ``"cls"`` or ``"mean"``; proj_dim: projection.
        activation: feed-forward activation (``gelu``; ``gelu_tanh`` for HF ``gelu_new``).
        position_ids, position_offset: see :class:`TextEmbeddings`. mlp_hidden: overrides
            ``dim * mlp_ratio`` (HF ``intermediate_size``).
        packing: run packed (unpadded) when the batch has padding; needs a prefix padding mask.
        sample_packing: ``{budget, strategy, rows}``: in training, run the texts packed whole into
            rows of ``budget`` tokens (:class:`~polyfuse.encoders.transformer.TransformerEncoder`).
    """

    def __init__(self, vocab_size: int = 128, max_length: int = 32, dim: int = 64, depth: int = 2,
                 heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0, type_vocab_size: int = 2,
                 pad_token_id: int = 0, eps: float = 1e-12, output: Output = "tokens",
                 proj_dim: int | None = None, grad_checkpointing: bool = False,
                 freeze: int | bool = False, attention_backend: str | None = None, pool: str | None = None,
                 activation: str = "gelu", position_ids: PositionIds = "absolute", position_offset: int = 0,
                 mlp_hidden: int | None = None, proj_bias: bool = True, packing: bool = False,
                 sample_packing: Mapping[str, Any] | None = None) -> None:
        super().__init__(dim, output, proj_dim, has_cls=True, pool=pool, proj_bias=proj_bias)
        self.embeddings = TextEmbeddings(vocab_size, dim, max_length, type_vocab_size, pad_token_id, eps, dropout,
                                         position_ids, position_offset)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio, dropout, norm="post", eps=eps, activation=activation,
                             backend=attention_backend, mlp_hidden=mlp_hidden)
            for _ in range(depth))
        self.input_map: nn.Module | None = None  # a TokenIdRemap when fed another vocabulary's ids
        self.grad_checkpointing = grad_checkpointing
        self.packing = packing
        self.set_sample_packing(sample_packing)
        self.freeze(freeze)

    def encode_with_attention(self, values: Tensor, mask: Tensor | None,
                              need_weights: bool = True) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """``values: (B, L)`` token ids -> ``(tokens (B, L, D), mask, maps)``; padded outputs are zero."""
        if values.dim() != 2 or values.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"TextTransformerEncoder expects token ids (B, L) int64, got {tuple(values.shape)} {values.dtype}")
        values = values.long()
        if self.input_map is not None:
            values, mask = self.input_map(values, mask)
        packed = self.encode_packed(values, mask, need_weights)
        if packed is not None:  # real tokens only from the embedding lookup on
            return packed, mask, []
        x = self.embeddings(values, mask=mask)
        x, maps = self.forward_blocks(x, mask, need_weights)
        x = zero_invalid(x, mask)
        return x, mask, maps

    def embed_packed(self, ids: Tensor, positions: Tensor) -> Tensor:
        return self.embeddings.forward_packed(ids, positions)

    def stem_modules(self) -> list[nn.Module]:
        return [self.embeddings]

"""The causal text transformer of CLIP (Radford et al., 2021), open_clip layout."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from polyfuse.encoders.base import Output
from polyfuse.encoders.transformer import TransformerEncoder
from polyfuse.layers import TransformerBlock
from polyfuse.masking import zero_invalid


class CLIPTextEncoder(TransformerEncoder):
    """Token + learned position embeddings, pre-norm causal blocks, final LayerNorm.

    Each token attends to itself and earlier real tokens (causal mask plus the key padding mask),
    so with right padding nothing a padded position holds reaches a real token; padded outputs
    are zeroed. With ``packing=True`` only the real tokens are embedded and run through the blocks
    (``(T, D)``, causal within each sample) and the output is padded back once; the result equals
    the padded path's. The pooled summary is the end-of-text token: ``pool="argmax"`` takes the position
    of the largest token id (open_clip's default: EOT has the largest id in CLIP's vocabulary),
    ``"last"`` the last real token by the mask, ``"mean"`` the masked mean. With
    ``output="pooled"`` and ``proj_dim`` = CLIP's ``embed_dim`` (``proj_bias=False``) this is
    open_clip's ``encode_text``; checkpoints load through
    :func:`polyfuse.encoders.pretrained.clip_text_from_open_clip`.

    Args:
        vocab_size, context_length: token and position tables. dim, depth, heads, mlp_ratio: size.
        activation: ``gelu``, or ``quick_gelu`` for OpenAI-trained weights. eps: LayerNorm epsilon.
        causal: causal self-attention (``False`` = bidirectional, open_clip ``no_causal_mask``).
        packing: run packed (unpadded) when the batch has padding; needs a prefix padding mask.
        sample_packing: ``{budget, strategy, rows}``: in training, run the texts packed whole into
            rows of ``budget`` tokens (:class:`~polyfuse.encoders.transformer.TransformerEncoder`).
    """

    pool_kinds = ("argmax", "last", "mean")

    def __init__(self, vocab_size: int = 49408, context_length: int = 77, dim: int = 512, depth: int = 12,
                 heads: int = 8, mlp_ratio: float = 4.0, dropout: float = 0.0, activation: str = "gelu",
                 eps: float = 1e-5, causal: bool = True, output: Output = "pooled", pool: str = "argmax",
                 proj_dim: int | None = None, proj_bias: bool = False, grad_checkpointing: bool = False,
                 freeze: int | bool = False, attention_backend: str | None = None,
                 layer_scale: float | None = None, packing: bool = False,
                 sample_packing: Mapping[str, Any] | None = None) -> None:
        super().__init__(dim, output, proj_dim, has_cls=False, pool=pool, proj_bias=proj_bias)
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, dim) * 0.01)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio, dropout, norm="pre", eps=eps, activation=activation,
                             backend=attention_backend, causal=causal, layer_scale=layer_scale)
            for _ in range(depth))
        self.ln_final = nn.LayerNorm(dim, eps=eps)
        self.grad_checkpointing = grad_checkpointing
        self.packing = packing
        self.set_sample_packing(sample_packing)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.freeze(freeze)

    def encode_with_attention(self, values: Tensor, mask: Tensor | None,
                              need_weights: bool = True) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """``values: (B, L)`` token ids, ``L <= context_length`` -> ``(tokens (B, L, D), mask, maps)``."""
        if values.dim() != 2 or values.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"CLIPTextEncoder expects token ids (B, L) int64, got {tuple(values.shape)} {values.dtype}")
        length = values.shape[1]
        if length > self.context_length:
            raise ValueError(f"text of {length} tokens exceeds the context length {self.context_length}")
        packed = self.encode_packed(values.long(), mask, need_weights)
        if packed is not None:  # real tokens only from the embedding lookup on
            return packed, mask, []
        x = self.token_embedding(values.long()) + self.positional_embedding[:length]
        x, maps = self.forward_blocks(x, mask, need_weights)
        x = self.ln_final(x)
        x = zero_invalid(x, mask)
        return x, mask, maps

    def embed_packed(self, ids: Tensor, positions: Tensor) -> Tensor:
        if positions.numel() and int(positions.max()) >= self.context_length:
            raise ValueError(f"{self.input_name()}: a packed position {int(positions.max())} is beyond the context "
                             f"length {self.context_length}")
        return self.token_embedding(ids) + self.positional_embedding[positions]

    def finish_packed(self, x: Tensor) -> Tensor:
        return self.ln_final(x)

    def pool_tokens(self, tokens: Tensor, mask: Tensor | None, values: Tensor) -> Tensor:
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        if self.pool == "argmax":
            ids = values if mask is None else values.masked_fill(~mask, torch.iinfo(values.dtype).min)
            return tokens[rows, ids.argmax(dim=-1)].unsqueeze(1)
        if self.pool == "last":
            last = (tokens.shape[1] - 1) * torch.ones_like(rows) if mask is None else mask.long().sum(-1).clamp_min(1) - 1
            return tokens[rows, last].unsqueeze(1)
        return super().pool_tokens(tokens, mask, values)

    def stem_modules(self) -> list[nn.Module]:
        return [self.token_embedding]

    def freeze(self, blocks: int | bool = True) -> None:
        super().freeze(blocks)
        if blocks is not False and blocks != 0:
            self.positional_embedding.requires_grad_(False)

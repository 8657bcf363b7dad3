"""A transformer decoder over text that cross-attends to fused tokens, with a KV cache for generation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse import attention as attention_api
from polyfuse.attention.varlen import Packing
from polyfuse.checkpointing import checkpointed
from polyfuse.layers import MultiHeadAttention

if TYPE_CHECKING:
    from polyfuse.data.packing import PackedRows


def _split(x: Tensor, heads: int) -> Tensor:  # (B, L, D) -> (B, H, L, D / H)
    return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:  # (B, H, L, Dh) -> (B, L, H * Dh)
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


def key_packing(mask: Tensor | None, batch: int, length: int) -> Packing:
    """The packing of cross-attention keys ``(B, length)`` whose valid ones are ``mask`` (``None`` = all).

    Unlike a query sequence, keys may have holes (a memory of concatenated modalities is
    ``[text + padding, image]``): attention over a set of keys does not depend on their order, so
    each sample's valid keys are gathered in row order, holes and all (:meth:`Packing.from_valid`).
    """
    if mask is None:
        return Packing.from_lengths(torch.full((batch,), length, dtype=torch.long), length)
    return Packing.from_valid(mask)


@dataclass
class LayerCache:
    """Keys/values of one decoder layer: the self-attention ones grow by one step per token, the
    cross-attention ones (over the memory) are computed once. All ``(B, H, L, Dh)``."""

    self_k: Tensor | None = None
    self_v: Tensor | None = None
    cross_k: Tensor | None = None
    cross_v: Tensor | None = None


@dataclass
class DecoderCache:
    """The incremental state of generation: per-layer caches, the memory mask and the length so far."""

    layers: list[LayerCache]
    memory_mask: Tensor | None
    length: int = 0

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index: (N,)`` (beam search re-selects which hypotheses continue)."""
        for layer in self.layers:
            for name in ("self_k", "self_v", "cross_k", "cross_v"):
                value = getattr(layer, name)
                if value is not None:
                    setattr(layer, name, value.index_select(0, index))
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, index)


class DecoderLayer(nn.Module):
    """Pre-norm block: causal self-attention, cross-attention to the memory, MLP (Vaswani et al., 2017).

    Both attentions go through :func:`polyfuse.attention.attention` (causal masking aligned to the
    last key, so one new query attends to the whole cached prefix). Packed (teacher forcing): ``x
    (T, dim)`` with its ``packing`` and the packed ``memory (Tm, memory_dim)`` with
    ``memory_packing``; self-attention is causal within each caption, cross-attention sees only its
    own sample's memory.
    """

    def __init__(self, dim: int, memory_dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm_self, self.norm_cross, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, heads, dropout=dropout)
        self.cross_attn = MultiHeadAttention(dim, heads, kv_dim=memory_dim, dropout=dropout)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def _attend(self, module: MultiHeadAttention, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
                causal: bool) -> Tensor:
        out = attention_api.attention(q, k, v, mask, causal=causal, backend=module.backend,
                                      dropout_p=self.dropout if self.training else 0.0)
        return module.out_proj(_merge(out))

    def cross_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys/values of the memory ``(B, M, memory_dim)``."""
        return (_split(self.cross_attn.k_proj(memory), self.heads),
                _split(self.cross_attn.v_proj(memory), self.heads))

    def forward(self, x: Tensor, memory_kv: tuple[Tensor, Tensor] | None, memory_mask: Tensor | None,
                cache: LayerCache | None = None, *, packing: Packing | None = None, memory: Tensor | None = None,
                memory_packing: Packing | None = None) -> Tensor:
        """``x: (B, L, dim)`` new positions; with ``cache``, the cached prefix is attended and extended.
        Packed: ``x (T, dim)``, ``packing``, ``memory (Tm, memory_dim)``, ``memory_packing`` -> ``(T, dim)``."""
        if packing is not None:
            if memory is None or memory_packing is None:
                raise ValueError("a packed DecoderLayer call needs the packed memory and its memory_packing")
            attn, _ = self.self_attn(self.norm_self(x), causal=True, packing=packing)
            x = x + self.drop(attn)
            attn, _ = self.cross_attn(self.norm_cross(x), memory, packing=packing, context_packing=memory_packing)
            x = x + self.drop(attn)
            return x + self.drop(self.mlp(self.norm_mlp(x)))
        h = self.norm_self(x)
        q = _split(self.self_attn.q_proj(h), self.heads)
        k = _split(self.self_attn.k_proj(h), self.heads)
        v = _split(self.self_attn.v_proj(h), self.heads)
        if cache is not None:
            if cache.self_k is not None:
                k, v = torch.cat([cache.self_k, k], dim=2), torch.cat([cache.self_v, v], dim=2)
            cache.self_k, cache.self_v = k, v
        x = x + self.drop(self._attend(self.self_attn, q, k, v, None, causal=True))
        q = _split(self.cross_attn.q_proj(self.norm_cross(x)), self.heads)
        x = x + self.drop(self._attend(self.cross_attn, q, *memory_kv, memory_mask, causal=False))
        return x + self.drop(self.mlp(self.norm_mlp(x)))


class CaptionDecoder(nn.Module):
    """Autoregressive text decoder conditioned on a memory (fused or encoded tokens).

    Token + learned position embeddings, ``depth`` :class:`DecoderLayer` blocks, a final LayerNorm
    and an output projection tied to the token embedding (Press & Wolf, 2017). Padded memory
    positions are masked as keys; an all-padded memory row gives a zero cross-attention output.

    Packed teacher forcing (``packing=True``): the caption tokens (``tokens != pad_id``, a prefix of
    each row) and the valid memory tokens are unpadded once; embeddings, every layer, the final norm
    and the logits run on real tokens only, and the logits are padded back to ``(B, L, vocab)`` with
    zeros at padding (positions the loss ignores). Real positions equal the padded path's. Generation
    (with a cache) stays padded. Sample packing (several captions per row, each with its own memory):
    :meth:`forward_packed` takes the packed tokens, their positions and :class:`Packing` directly.

    Args:
        vocab_size: output vocabulary. dim: width. memory_dim: width of the memory tokens.
        depth, heads, mlp_ratio, dropout: block settings. max_positions: longest decoder input.
        pad_id: padding token (its embedding is not trained). tie_embeddings: share input/output.
        packing: packed teacher forcing (see above).
    """

    #: how errors name the decoder's input tokens (the captioning head sets its target key)
    input_name: str = "caption tokens"

    def __init__(self, vocab_size: int, dim: int = 128, memory_dim: int = 128, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, max_positions: int = 32, pad_id: int = 0,
                 tie_embeddings: bool = True, packing: bool = False) -> None:
        super().__init__()
        self.vocab_size, self.max_positions, self.pad_id, self.packing = vocab_size, max_positions, pad_id, packing
        self.token_embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.position_embedding = nn.Embedding(max_positions, dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        self.layers = nn.ModuleList(DecoderLayer(dim, memory_dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        # tied: the logits use the token embedding itself (one tensor in the state dict)
        self.output = None if tie_embeddings else nn.Linear(dim, vocab_size, bias=False)

    def checkpoint_blocks(self) -> list[nn.Module]:
        """The layers teacher forcing runs through :func:`polyfuse.checkpointing.checkpointed`."""
        return list(self.layers)

    def start(self, memory: Tensor, memory_mask: Tensor | None = None) -> DecoderCache:
        """A fresh cache for generation over ``memory: (B, M, memory_dim)`` (cross keys/values computed once)."""
        layers = []
        for layer in self.layers:
            k, v = layer.cross_kv(memory)
            layers.append(LayerCache(cross_k=k, cross_v=v))
        return DecoderCache(layers, memory_mask)

    def forward(self, tokens: Tensor, memory: Tensor | None = None, memory_mask: Tensor | None = None,
                cache: DecoderCache | None = None) -> Tensor:
        """``tokens: (B, L)`` -> logits ``(B, L, vocab)``.

        Teacher forcing: pass ``memory (B, M, memory_dim)`` and its mask. Generation: pass the new
        tokens and the ``cache`` from :meth:`start`; the cache is extended in place.
        """
        offset = 0 if cache is None else cache.length
        length = tokens.shape[1]
        if offset + length > self.max_positions:
            raise ValueError(f"decoder input of {offset + length} tokens exceeds max_positions={self.max_positions}")
        if cache is None and self.packing and memory is not None:
            return self._packed(tokens, memory, memory_mask)
        positions = torch.arange(offset, offset + length, device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)[None]
        if cache is None:
            if memory is None:
                raise ValueError("CaptionDecoder needs a memory (teacher forcing) or a cache (generation)")
            for layer in self.layers:
                x = checkpointed(layer, x, layer.cross_kv(memory), memory_mask)
        else:
            for layer, layer_cache in zip(self.layers, cache.layers):
                x = layer(x, (layer_cache.cross_k, layer_cache.cross_v), cache.memory_mask, layer_cache)
            cache.length += length
        return self._logits(x)

    def _logits(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        return F.linear(x, self.token_embedding.weight) if self.output is None else self.output(x)

    def _packed(self, tokens: Tensor, memory: Tensor, memory_mask: Tensor | None) -> Tensor:
        """Teacher forcing on the real caption tokens and memory only; logits padded back once."""
        packing = Packing.from_mask(tokens != self.pad_id, name=self.input_name)
        logits = self.forward_packed(packing.unpad(tokens), packing.position_ids(), packing, memory, memory_mask)
        return packing.pad(logits)

    def forward_packed(self, tokens: Tensor, positions: Tensor, packing: Packing, memory: Tensor,
                       memory_mask: Tensor | None = None) -> Tensor:
        """Teacher forcing on packed sequences: ``tokens (T,)`` -> logits ``(T, vocab)``.

        ``tokens`` hold ``S`` sequences one after another (:meth:`PackedRows.tokens
        <polyfuse.data.packing.PackedRows.tokens>` with :meth:`~polyfuse.data.packing.PackedRows.packing`,
        or whole fixed-width rows with :meth:`~polyfuse.data.packing.PackedRows.segments`);
        ``positions (T,)`` number each token within its own sequence; ``packing`` (its
        ``cu_seqlens (S + 1,)``) cuts the sequences: self-attention is causal *within* each one.
        ``memory (S, M, memory_dim)`` is each sequence's own memory (row ``s`` for sequence ``s``, e.g.
        ``memory[rows.order]``) with its ``memory_mask (S, M)`` (``None``: all real; holes allowed; an
        all-``False`` row gives a zero cross-attention output): cross-attention runs varlen, queries
        over the sequences and keys over their memories, so a caption sees only its own memory. Each
        sequence's logits equal those of the padded :meth:`forward` on it alone.
        """
        if tokens.dim() != 1 or positions.shape != tokens.shape or packing.total != tokens.numel():
            raise ValueError(f"forward_packed: {self.input_name} must be (T,) with (T,) positions and a packing "
                             f"of T rows, got tokens {tuple(tokens.shape)}, positions {tuple(positions.shape)}, "
                             f"packing of {packing.total} rows")
        if memory.dim() != 3 or memory.shape[0] != packing.batch:
            raise ValueError(f"forward_packed: memory must be (S, M, memory_dim) with one row per packed sequence "
                             f"(S = {packing.batch}), got {tuple(memory.shape)}")
        if tokens.numel() and int(positions.max()) >= self.max_positions:
            raise ValueError(f"forward_packed: {self.input_name} has a position {int(positions.max())} beyond "
                             f"max_positions={self.max_positions}")
        memory_packing = key_packing(memory_mask, memory.shape[0], memory.shape[1])
        packed_memory = memory_packing.unpad(memory)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        for layer in self.layers:
            x = checkpointed(layer, x, None, None, packing=packing, memory=packed_memory,
                             memory_packing=memory_packing)
        return self._logits(x)

    def forward_rows(self, rows: PackedRows, memory: Tensor, memory_mask: Tensor | None = None) -> Tensor:
        """Teacher forcing on whole fixed-width packed rows -> logits ``(R, budget, vocab)``.

        ``rows`` (:class:`~polyfuse.data.packing.PackedRows`, from the collator or
        :func:`~polyfuse.data.packing.pack_padded`) are run as they are, row padding included (a
        fixed shape): :meth:`PackedRows.segments` cuts them into the samples and each row's padding
        tail. ``memory (N, M, memory_dim)`` and ``memory_mask (N, M)`` are indexed by the *input*
        sample (before packing); each caption attends to its own memory, a padding segment to none.
        Slots without a token hold finite logits no loss should read (:meth:`PackedRows.unpack`).
        """
        packing, sample = rows.segments()
        index = rows.order[sample.clamp(min=0)]
        mask = memory.new_ones(memory.shape[:2], dtype=torch.bool) if memory_mask is None else memory_mask
        mask = mask[index] & (sample >= 0)[:, None]
        logits = self.forward_packed(rows.input_ids.reshape(-1), rows.position_ids.reshape(-1), packing,
                                     memory[index], mask)
        return logits.view(*rows.input_ids.shape, -1)


class DecoderStepper:
    """Adapts a :class:`CaptionDecoder` and its cache to :class:`~polyfuse.heads.generation.StepModel`.

    ``copies`` > 1 repeats every sample's cache (beam search keeps the beams of a sample adjacent).
    """

    def __init__(self, decoder: CaptionDecoder, memory: Tensor, memory_mask: Tensor | None = None,
                 copies: int = 1) -> None:
        self.decoder = decoder
        self.cache = decoder.start(memory, memory_mask)
        if copies > 1:
            self.cache.reorder(torch.arange(memory.shape[0], device=memory.device).repeat_interleave(copies))

    def step(self, tokens: Tensor) -> Tensor:
        """``tokens: (N, 1)`` -> next-token logits ``(N, vocab)``."""
        return self.decoder(tokens, cache=self.cache)[:, -1]

    def reorder(self, index: Tensor) -> None:
        self.cache.reorder(index)

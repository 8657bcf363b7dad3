"""The multi-head attention layer, built on :func:`polyfuse.attention.attention`."""

from __future__ import annotations

from torch import Tensor, nn

from polyfuse import attention as attention_api
from polyfuse.attention.varlen import Packing


class MultiHeadAttention(nn.Module):
    """Multi-head (self- or cross-) attention with a key padding mask.

    Separate ``q_proj``/``k_proj``/``v_proj``/``out_proj`` linears (loaders split fused ``qkv``
    weights). Keys/values may have their own width ``kv_dim`` (cross-attention between modalities).
    The attention probabilities are returned when asked (``need_weights=True``), for attention maps.

    Args:
        dim: query/output width. heads: number of heads (``dim % heads == 0``).
        kv_dim: key/value input width (defaults to ``dim``).
        backend: attention backend name. ``None`` takes the library default
            (:func:`polyfuse.attention.set_default_backend`) once, here: it is read when the layer is
            built, not on every call (as timm's ``use_fused_attn()``), so set the run's backend before
            building the model (``polyfuse-train`` does).
    """

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None, bias: bool = True,
                 dropout: float = 0.0, backend: str | None = None) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        kv_dim = dim if kv_dim is None else kv_dim
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = dropout
        self.backend = attention_api.get_default_backend() if backend is None else backend
        if self.backend not in attention_api.available_backends():
            raise ValueError(f"unknown attention backend {self.backend!r}; valid: "
                             f"{', '.join(attention_api.available_backends())}")

    def _split(self, x: Tensor) -> Tensor:  # (B, L, dim) -> (B, H, L, head_dim)
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor | None = None, key_padding_mask: Tensor | None = None,
                *, causal: bool = False, need_weights: bool = False, packing: Packing | None = None,
                context_packing: Packing | None = None) -> tuple[Tensor, Tensor | None]:
        """``x: (B, Lq, dim)``, ``context: (B, Lk, kv_dim)`` (defaults to ``x``), mask ``(B, Lk)``.

        Packed (varlen) inputs: ``x (Tq, dim)`` with its ``packing`` and ``context (Tk, kv_dim)`` with
        ``context_packing`` (defaults to ``packing``, as for self-attention); attention stays within
        each sample (:class:`polyfuse.attention.varlen.Packing`).

        Returns ``(out (B, Lq, dim), probs (B, H, Lq, Lk) or None)``; packed: ``out (Tq, dim)`` and
        ``probs`` padded to ``(B, H, max Lq, max Lk)``.
        """
        context = x if context is None else context
        if packing is not None:
            return self._packed(x, context, packing, context_packing or packing, causal, need_weights)
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(context)), self._split(self.v_proj(context))
        result = attention_api.attention(
            q, k, v, key_padding_mask, causal=causal, dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend, need_weights=need_weights)
        out, probs = result if need_weights else (result, None)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.dim)
        return self.out_proj(out), probs

    def _packed(self, x: Tensor, context: Tensor, packing: Packing, context_packing: Packing, causal: bool,
                need_weights: bool) -> tuple[Tensor, Tensor | None]:
        heads, head_dim = self.heads, self.head_dim
        q = self.q_proj(x).view(x.shape[0], heads, head_dim)
        k = self.k_proj(context).view(context.shape[0], heads, head_dim)
        v = self.v_proj(context).view(context.shape[0], heads, head_dim)
        result = attention_api.attention(
            q, k, v, causal=causal, dropout_p=self.dropout if self.training else 0.0, backend=self.backend,
            need_weights=need_weights, cu_seqlens_q=packing.cu_seqlens, cu_seqlens_k=context_packing.cu_seqlens,
            max_seqlen_q=packing.max_seqlen, max_seqlen_k=context_packing.max_seqlen)
        out, probs = result if need_weights else (result, None)
        return self.out_proj(out.reshape(x.shape[0], self.dim)), probs

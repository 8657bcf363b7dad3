"""Autotuning search spaces for the attention kernels, per GPU generation.

Triton benchmarks every config the first time it meets a new key (length buckets, head dim,
causal, mask, dtype) and caches the winner for the process. The spaces:

- Hopper (sm90, H100/H200): large query tiles (128) with 64/128-key tiles, 8 warps, 3-4 stages,
  the FlashAttention-2 / Triton tutorial sweet spot on wgmma.
- Ampere and others (sm80/sm86/sm89): 64/128 query tiles, 32/64-key tiles, 4 warps, fewer stages
  (less shared memory per SM).
- The CPU interpreter (``TRITON_INTERPRET=1``): one small config, because each tile runs in numpy.

Configs whose tiles are larger than the (power-of-two rounded) sequence are pruned so that short
text sequences (40-77 keys) are not padded to 128-wide tiles.
"""

from __future__ import annotations

import os
from typing import Any

import triton


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1`` at import)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _capability() -> tuple[int, int]:
    import torch

    if interpreting() or not torch.cuda.is_available():
        return (0, 0)
    return torch.cuda.get_device_capability()


def _grid(blocks: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in blocks]


def forward_configs() -> list[triton.Config]:
    """Forward tiles ``(BLOCK_M queries, BLOCK_N keys)``."""
    major, _ = _capability()
    if major == 0:
        return _grid([(16, 16, 1, 1)])
    if major >= 9:
        return _grid([(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 4), (64, 64, 4, 4), (128, 32, 4, 4),
                      (64, 32, 4, 3)])
    return _grid([(128, 64, 4, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 4), (128, 64, 8, 2)])


def key_block_configs() -> list[triton.Config]:
    """Backward dK/dV tiles: one program owns ``BLOCK_N`` keys and streams ``BLOCK_M`` queries."""
    major, _ = _capability()
    if major == 0:
        return _grid([(16, 16, 1, 1)])
    if major >= 9:
        return _grid([(64, 128, 8, 3), (32, 128, 4, 3), (64, 64, 4, 3), (32, 64, 4, 4), (16, 64, 4, 4)])
    return _grid([(32, 128, 8, 2), (32, 64, 4, 3), (64, 64, 4, 2), (16, 64, 4, 3)])


def query_block_configs() -> list[triton.Config]:
    """Backward dQ tiles: one program owns ``BLOCK_M`` queries and streams ``BLOCK_N`` keys."""
    major, _ = _capability()
    if major == 0:
        return _grid([(16, 16, 1, 1)])
    if major >= 9:
        return _grid([(128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 4)])
    return _grid([(128, 32, 4, 3), (64, 64, 4, 2), (64, 32, 4, 3)])


def _limit(length_key: int) -> int:
    return max(16, length_key)


def prune_configs(configs: list[triton.Config], named_args: dict[str, Any], **kwargs: Any) -> list[triton.Config]:
    """Drop tiles larger than the rounded sequence; keep at least the smallest config.

    Tiles wider than 64 are also dropped for head dim 256 (they do not fit in shared memory).
    """
    lq_limit, lk_limit = _limit(named_args["LQ_KEY"]), _limit(named_args["LK_KEY"])
    head_dim = named_args.get("HEAD_DIM", kwargs.get("HEAD_DIM", 64))
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= lq_limit and c.kwargs["BLOCK_N"] <= lk_limit
            and (head_dim <= 128 or max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) <= 64)]
    if kept:
        return kept
    return [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


def length_key(length: int) -> int:
    """Power-of-two bucket of a sequence length: the autotuning key (one tuning per bucket)."""
    return 1 << max(0, (int(length) - 1).bit_length())

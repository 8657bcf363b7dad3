"""Pairwise sigmoid loss (SigLIP), correct under data parallelism."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.losses.gather import distributed_world, gather_features, neighbour_exchange, neighbour_exchange_bidir
from polyfuse.losses.masking import mask_rows, zero_with_graph

__all__ = ["SigLipLoss"]


class SigLipLoss(nn.Module):
    """SigLIP: an independent binary logistic loss on every ``(a_i, b_j)`` pair (Zhai et al., 2023).

    ``loss = -Σ_ij log σ(y_ij (s a_i·b_j + t)) / n`` with ``y_ij = +1`` on matching pairs and ``-1``
    elsewhere, ``s`` the logit scale and ``t`` the logit bias, summed over the local rows ``i`` and the
    global columns ``j`` and divided by the local batch size ``n`` -- the value and gradient of
    ``open_clip.loss.SigLipLoss`` (tested against its ``gather`` and ``bidir`` implementations). The
    ``b`` features of all ranks are gathered with gradient, so each rank's ``b`` receives the
    gradient of every rank's negatives, as in open_clip's neighbour exchange.

    Missing modalities and placeholder rows: ``valid: (B,)`` drops invalid samples as rows and as
    columns (the flags are gathered with the features) and divides by the global number of valid
    rows per rank (the local count in one process), so DDP's average is the global value; a rank
    without a valid row returns ``0`` with a graph through the gathered features. Batch sizes
    must agree across ranks.

    ``exchange="ring"``: the SigLIP paper's chunked loss (its Figure 1; open_clip's ``bidir``
    neighbour exchange): instead of all-gathering ``b`` (``N x D`` on every rank), each rank scores
    its local block, then passes the ``b`` block it holds to its neighbours, ``world_size - 1`` times
    (both directions at once, so about half as many rounds); at most three ``n x D`` blocks and
    one ``n x n`` logit block live at a time. Same loss and gradients as ``"gather"`` (tested).
    """

    def __init__(self, rank: int | None = None, world_size: int | None = None,
                 exchange: Literal["gather", "ring"] = "gather") -> None:
        super().__init__()
        if exchange not in ("gather", "ring"):
            raise ValueError(f"SigLipLoss exchange must be 'gather' or 'ring', got {exchange!r}")
        self.rank, self.world_size, self.exchange = rank, world_size, exchange

    def forward(self, a_features: Tensor, b_features: Tensor, logit_scale: Tensor | float,
                logit_bias: Tensor | float = 0.0, valid: Tensor | None = None) -> Tensor:
        """``a_features, b_features: (B, D)`` (normalised), scalars ``logit_scale`` (``exp`` applied) and
        ``logit_bias``, ``valid: (B,)`` bool or ``None`` -> scalar loss."""
        if a_features.shape != b_features.shape:
            raise ValueError(f"SigLipLoss needs paired features of equal shape, got "
                             f"{tuple(a_features.shape)} and {tuple(b_features.shape)}")
        rank, world_size = distributed_world(self.rank, self.world_size)
        n = a_features.shape[0]
        if valid is None and world_size > 1:  # another rank may have invalid rows: every rank gathers flags
            valid = torch.ones(n, dtype=torch.bool, device=a_features.device)
        # invalid rows are zeroed before the gather, so no rank multiplies their garbage into its gradient
        a_features, b_features = mask_rows(a_features, valid), mask_rows(b_features, valid)
        if self.exchange == "ring" and world_size > 1:
            per_row, all_valid = self._ring_rows(a_features, b_features, logit_scale, logit_bias, valid, rank,
                                                 world_size)
        else:
            per_row, all_valid = self._gathered_rows(a_features, b_features, logit_scale, logit_bias, valid, rank,
                                                     world_size)
        if valid is None or all_valid is None:
            return per_row.sum() / n
        if not bool(valid.any()):
            return zero_with_graph(per_row)
        # divided by the global valid rows per rank: DDP's average of the ranks' losses is the global value
        rows_per_rank = all_valid.sum().to(per_row.dtype) / world_size
        return mask_rows(per_row, valid).sum() / rows_per_rank

    @staticmethod
    def _block_rows(a: Tensor, b: Tensor, logit_scale: Tensor | float, logit_bias: Tensor | float,
                    positives: bool, b_valid: Tensor | None) -> Tensor:
        """``(n,)``: each local row's terms against one ``b`` block (its diagonal positive when ``positives``)."""
        logits = logit_scale * a @ b.T + logit_bias                        # (n, m)
        labels = -torch.ones_like(logits)
        if positives:
            labels.fill_diagonal_(1.0)
        terms = -F.logsigmoid(labels * logits)
        if b_valid is not None:  # real columns only
            terms = mask_rows(terms, b_valid[None, :])
        return terms.sum(1)

    def _gathered_rows(self, a: Tensor, b: Tensor, logit_scale: Tensor | float, logit_bias: Tensor | float,
                       valid: Tensor | None, rank: int, world_size: int) -> tuple[Tensor, Tensor | None]:
        """Per-row sums against the all-gathered ``b`` ``(N, D)``, and the gathered flags ``(N,)``."""
        n = a.shape[0]
        all_b = gather_features(b, gather_with_grad=True, rank=rank, world_size=world_size)
        all_valid = None if valid is None else gather_features(valid.to(torch.uint8), rank=rank,
                                                               world_size=world_size).bool()
        logits = logit_scale * a @ all_b.T + logit_bias          # (n, N)
        labels = -torch.ones_like(logits)
        labels[torch.arange(n, device=logits.device), torch.arange(n, device=logits.device) + n * rank] = 1.0
        terms = -F.logsigmoid(labels * logits)
        if all_valid is not None:
            terms = mask_rows(terms, all_valid[None, :])
        return terms.sum(1), all_valid

    def _ring_rows(self, a: Tensor, b: Tensor, logit_scale: Tensor | float, logit_bias: Tensor | float,
                   valid: Tensor | None, rank: int, world_size: int) -> tuple[Tensor, Tensor | None]:
        """The same per-row sums, ``b`` blocks passed around the ring; the flags of every block, concatenated."""
        left, right = (rank - 1) % world_size, (rank + 1) % world_size
        flags = None if valid is None else valid.to(torch.uint8)
        seen = [] if flags is None else [flags]

        def score(block: Tensor, block_flags: Tensor | None) -> Tensor:
            if block_flags is not None:
                seen.append(block_flags)
            return self._block_rows(a, block, logit_scale, logit_bias, False,
                                    None if block_flags is None else block_flags.bool())

        per_row = self._block_rows(a, b, logit_scale, logit_bias, True, valid)
        to_left = to_right = b
        flags_to_left = flags_to_right = flags
        for _ in range((world_size - 1) // 2):  # both ways at once: the blocks of rank + k and rank - k
            from_right, from_left = neighbour_exchange_bidir(to_left, to_right, left, right)
            flags_from_right = flags_from_left = None
            if flags is not None:
                flags_from_right, flags_from_left = neighbour_exchange_bidir(flags_to_left, flags_to_right, left,
                                                                             right)
            per_row = per_row + score(from_right, flags_from_right) + score(from_left, flags_from_left)
            to_left, to_right = from_right, from_left   # pass each block on in the direction it travels
            flags_to_left, flags_to_right = flags_from_right, flags_from_left
        if (world_size - 1) % 2:  # the block diametrically opposite, from one side only
            block = neighbour_exchange(to_right, right, left)
            block_flags = None if flags is None else neighbour_exchange(flags_to_right, right, left)
            per_row = per_row + score(block, block_flags)
        return per_row, None if flags is None else torch.cat(seen).bool()

"""Pairwise sigmoid loss (SigLIP), correct under data parallelism."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.losses.gather import distributed_world, gather_features
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
    """

    def __init__(self, rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__()
        self.rank, self.world_size = rank, world_size

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
        all_b = gather_features(b_features, gather_with_grad=True, rank=rank, world_size=world_size)
        logits = logit_scale * a_features @ all_b.T + logit_bias          # (n, N)
        labels = -torch.ones_like(logits)
        labels[torch.arange(n, device=logits.device), torch.arange(n, device=logits.device) + n * rank] = 1.0
        terms = -F.logsigmoid(labels * logits)
        if valid is None:
            return terms.sum() / n
        all_valid = gather_features(valid.to(torch.uint8), rank=rank, world_size=world_size).bool()
        per_row = mask_rows(terms, all_valid[None, :]).sum(1)  # real columns only
        if not bool(valid.any()):
            return zero_with_graph(per_row)
        # divided by the global valid rows per rank: DDP's average of the ranks' losses is the global value
        rows_per_rank = all_valid.sum().to(terms.dtype) / world_size
        return mask_rows(per_row, valid).sum() / rows_per_rank

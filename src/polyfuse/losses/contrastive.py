"""Symmetric InfoNCE / CLIP loss between two modalities, correct under data parallelism."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.losses.gather import distributed_world, gather_features
from polyfuse.losses.masking import mask_rows, zero_with_graph

__all__ = ["ContrastiveLoss"]


class ContrastiveLoss(nn.Module):
    """CLIP's symmetric cross-entropy over the ``a``–``b`` similarity matrix (InfoNCE).

    ``loss = (CE(s * A Bᵀ, diag) + CE(s * B Aᵀ, diag)) / 2`` with ``A, B`` the (already normalised)
    features and ``s`` the logit scale (Oord et al., 2018; Radford et al., 2021). It equals
    ``open_clip.loss.ClipLoss`` (tested), for any pair of modalities.

    Under ``torch.distributed`` the features of every rank are gathered so each sample sees the
    global batch as negatives:

    * ``local_loss=False``: every rank computes the loss over the full ``N x N`` matrix;
    * ``local_loss=True``: each rank computes only its rows (``n x N``) and columns, as open_clip's
      ``--local-loss`` (cheaper; the DDP-averaged gradient is the same);
    * ``gather_with_grad``: gradients flow back through the gather to the rank that produced the
      features (needed for the exact global gradient with ``local_loss=True``).

    Missing modalities and placeholder rows: ``valid: (B,)`` (both modalities present, a real
    sample) drops invalid samples as queries and as negatives on every rank (the flags are
    gathered with the features); ``valid=None`` uses every sample. Batch sizes must agree across
    ranks. With ``local_loss`` a rank's loss is its valid rows' sum divided by the global number of
    valid rows per rank, so DDP's gradient average is the global mean. A rank without a valid query
    returns ``0`` whose graph still reaches the gathered features, so the backward of
    ``gather_with_grad`` (a collective) runs on every rank.

    Args:
        local_loss, gather_with_grad: see above. rank, world_size: override the process group
            (``None`` = read ``torch.distributed`` at call time).
    """

    def __init__(self, local_loss: bool = False, gather_with_grad: bool = True, rank: int | None = None,
                 world_size: int | None = None) -> None:
        super().__init__()
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad
        self.rank, self.world_size = rank, world_size

    def logits(self, a_features: Tensor, b_features: Tensor, logit_scale: Tensor | float,
               valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """``(logits_a (rows, N), logits_b (rows, N), labels (rows,), valid rows or None)``."""
        return self._logits(a_features, b_features, logit_scale, valid)[:4]

    def _logits(self, a_features: Tensor, b_features: Tensor, logit_scale: Tensor | float,
                valid: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        """:meth:`logits` plus the gathered validity flags ``(N,)`` (``None`` without ``valid``)."""
        rank, world_size = distributed_world(self.rank, self.world_size)
        if valid is None and world_size > 1:  # another rank may have invalid rows: every rank gathers flags
            valid = torch.ones(a_features.shape[0], dtype=torch.bool, device=a_features.device)
        # invalid rows are zeroed before the gather, so no rank multiplies their garbage into its gradient
        a_features, b_features = mask_rows(a_features, valid), mask_rows(b_features, valid)
        options = dict(local_loss=self.local_loss, gather_with_grad=self.gather_with_grad, rank=rank,
                       world_size=world_size)
        all_a = gather_features(a_features, **options)
        all_b = gather_features(b_features, **options)
        all_valid = None
        if valid is not None:
            all_valid = gather_features(valid.to(torch.uint8), rank=rank, world_size=world_size).bool()
        if self.local_loss and world_size > 1:
            logits_a = logit_scale * a_features @ all_b.T
            logits_b = logit_scale * b_features @ all_a.T
            labels = torch.arange(a_features.shape[0], device=a_features.device) + a_features.shape[0] * rank
            row_valid = valid
        else:
            logits_a = logit_scale * all_a @ all_b.T
            logits_b = logits_a.T
            labels = torch.arange(all_a.shape[0], device=a_features.device)
            row_valid = all_valid
        if all_valid is not None:  # absent samples are never negatives
            logits_a = logits_a.masked_fill(~all_valid[None], torch.finfo(logits_a.dtype).min)
            logits_b = logits_b.masked_fill(~all_valid[None], torch.finfo(logits_b.dtype).min)
        return logits_a, logits_b, labels, row_valid, all_valid

    def forward(self, a_features: Tensor, b_features: Tensor, logit_scale: Tensor | float,
                valid: Tensor | None = None) -> Tensor:
        """``a_features, b_features: (B, D)`` (normalised), ``logit_scale``: scalar (``exp`` already
        applied), ``valid: (B,)`` bool or ``None`` -> scalar loss."""
        if a_features.shape != b_features.shape:
            raise ValueError(f"ContrastiveLoss needs paired features of equal shape, got "
                             f"{tuple(a_features.shape)} and {tuple(b_features.shape)}")
        logits_a, logits_b, labels, row_valid, all_valid = self._logits(a_features, b_features, logit_scale, valid)
        if row_valid is None or all_valid is None:
            return (F.cross_entropy(logits_a, labels) + F.cross_entropy(logits_b, labels)) / 2
        per_row = (F.cross_entropy(logits_a, labels, reduction="none")
                   + F.cross_entropy(logits_b, labels, reduction="none")) / 2
        if not bool(row_valid.any()):
            return zero_with_graph(logits_a, logits_b, logit_scale)
        total = mask_rows(per_row, row_valid).sum()
        world_size = distributed_world(self.rank, self.world_size)[1]
        if self.local_loss and world_size > 1:
            # each rank's rows over the global count per rank: DDP's average of the ranks' losses is then
            # the mean over every valid row of the global batch, however unevenly they are spread
            return total * world_size / all_valid.sum().to(total.dtype)
        return total / row_valid.sum().to(total.dtype)

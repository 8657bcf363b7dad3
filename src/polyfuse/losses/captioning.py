"""Teacher-forced token cross-entropy with label smoothing, ignoring padding."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from polyfuse.losses.masking import mask_rows, masked_mean

__all__ = ["sequence_cross_entropy"]


def sequence_cross_entropy(logits: Tensor, targets: Tensor, ignore_index: int = -100,
                           label_smoothing: float = 0.0, valid: Tensor | None = None) -> Tensor:
    """Mean cross-entropy over every non-ignored token.

    ``logits: (B, L, V)``, ``targets: (B, L)`` (``ignore_index`` marks padding). With
    ``label_smoothing = ε`` the target distribution is ``(1 - ε)`` on the gold token plus ``ε / V``
    everywhere (Szegedy et al., 2016), as in ``F.cross_entropy``. ``valid: (B,)`` bool leaves
    placeholder rows out (:func:`~polyfuse.losses.masking.masked_mean`); no counted token gives 0.
    """
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"sequence_cross_entropy: logits {tuple(logits.shape)} do not match targets "
                         f"{tuple(targets.shape)}")
    logits = mask_rows(logits, valid)
    per_token = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index,
                                label_smoothing=label_smoothing, reduction="none").view(targets.shape)
    return masked_mean(per_token, valid, weight=targets != ignore_index)

"""Analysis: canonical correlations between two encoders' embeddings of the same samples.

A probe of how aligned two modalities' representations are (the CCA view of representation
similarity; Raghu, Gilmer, Yosinski & Sohl-Dickstein, "SVCCA", NeurIPS 2017). Linear CCA is fitted
on one part of the data and its correlations are reported on the rest, because in-sample canonical
correlations of ``D``-dimensional embeddings are biased upwards when ``N`` is not much larger than ``D``.

>>> from polyfuse.alignment.analysis import encoder_correlations
>>> report = encoder_correlations(lit_module.model, datamodule.test_dataloader()[0], "image", "audio", k=10)
>>> report.heldout.mean()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

import torch
from torch import Tensor

from polyfuse.alignment.cca import LinearCCA
from polyfuse.batch import Batch, Encoded

__all__ = ["CorrelationReport", "pooled_embeddings", "encoder_correlations"]


class _Encodes(Protocol):
    def encode(self, batch: Batch) -> dict[str, Encoded]: ...


@dataclass
class CorrelationReport:
    """Canonical correlations ``(k,)`` of two modalities' embeddings.

    Attributes:
        fitted: in-sample correlations on the fitting part (optimistic).
        heldout: correlations of the fitted projections on the held-out part.
        samples: number of paired samples used (fitting + held out).
    """

    fitted: Tensor
    heldout: Tensor
    samples: int


@torch.no_grad()
def pooled_embeddings(model: _Encodes, batches: Iterable[Batch], modalities: Iterable[str],
                      device: torch.device | str | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Run ``model.encode`` over ``batches``: pooled embeddings ``(N, D_m)`` and presence ``(N,)`` per modality."""
    names = list(modalities)
    embeddings: dict[str, list[Tensor]] = {m: [] for m in names}
    presence: dict[str, list[Tensor]] = {m: [] for m in names}
    for batch in batches:
        if device is not None:
            batch = batch.to(device)
        encoded = model.encode(batch)
        for m in names:
            if m not in encoded:
                raise KeyError(f"the model produced no encoding for {m!r}; it has {list(encoded)}")
            embeddings[m].append(encoded[m].pooled().float().cpu())
            presence[m].append(encoded[m].valid_mask().any(1).cpu())
    if not embeddings[names[0]]:
        raise ValueError("pooled_embeddings got no batches")
    return {m: torch.cat(v) for m, v in embeddings.items()}, {m: torch.cat(v) for m, v in presence.items()}


def encoder_correlations(model: _Encodes, batches: Iterable[Batch], first: str, second: str, k: int = 10,
                         reg: float = 1e-3, heldout: Iterable[Batch] | None = None, heldout_fraction: float = 0.5,
                         seed: int = 0, device: torch.device | str | None = None) -> CorrelationReport:
    """Fit linear CCA between ``first`` and ``second`` embeddings and report fitted and held-out correlations.

    Only samples where both modalities are present are used. With ``heldout`` batches (e.g. the test
    split) CCA is fitted on all of ``batches`` (e.g. the training split) and scored on ``heldout``;
    otherwise the samples of ``batches`` are split at random (``seed``) and ``heldout_fraction`` of
    them is held out.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")

    def paired(source: Iterable[Batch]) -> tuple[Tensor, Tensor]:
        embeddings, presence = pooled_embeddings(model, source, [first, second], device)
        rows = presence[first] & presence[second]
        return embeddings[first][rows], embeddings[second][rows]

    x, y = paired(batches)
    if heldout is not None:
        (x_fit, y_fit), (x_test, y_test) = (x, y), paired(heldout)
    else:
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
        cut = int(round(x.shape[0] * (1.0 - heldout_fraction)))
        x_fit, y_fit, x_test, y_test = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
    if x_fit.shape[0] < 2 or x_test.shape[0] < 2:
        raise ValueError(f"too few paired samples of {first!r} and {second!r} for a held-out CCA "
                         f"({x_fit.shape[0]} to fit, {x_test.shape[0]} held out)")
    cca = LinearCCA(k=k, reg=reg).fit(x_fit, y_fit)
    return CorrelationReport(fitted=cca.correlations_, heldout=cca.score(x_test, y_test),
                             samples=x_fit.shape[0] + x_test.shape[0])

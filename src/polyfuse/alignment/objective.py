"""Correlation training objectives on the encoders' outputs: DCCA, DCCAE, GCCA, sum of pairwise DCCA.

Used as an auxiliary objective of :class:`~polyfuse.training.PolyfuseLitModule`
(``model.objectives.<name>`` in configs, e.g. ``configs/model/objective/dcca.yaml``): it reads the
per-modality encodings of the forward pass, ``output.encoded``, and returns named losses that the
module adds to the task loss and logs as ``<stage>/aux/<name>/<key>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn

from polyfuse.alignment.dcca import deep_cca_loss
from polyfuse.alignment.gcca import gcca_loss, pairwise_cca_loss
from polyfuse.batch import Batch, Encoded
from polyfuse.masking import zero_invalid

if TYPE_CHECKING:
    from polyfuse.models.multimodal import ModelOutput

__all__ = ["CorrelationObjective"]

Method = Literal["cca", "gcca", "pairwise"]


class CorrelationObjective(nn.Module):
    """Maximise the correlation between modalities' projected encodings.

    Each modality's pooled encoding ``x_m (B, D_m)`` (masked mean over real tokens) goes through its
    own projection network ``f_m`` (LayerNorm, MLP) to ``h_m (B, out_dim)``. Then

    * ``method="cca"`` (two modalities): the Deep CCA loss ``-sum_k rho_k(h_1, h_2)`` (Andrew, Arora,
      Bilmes & Livescu, ICML 2013);
    * ``method="pairwise"``: the sum of the DCCA losses of every pair of modalities (Kettenring 1971);
    * ``method="gcca"``: the Deep GCCA objective ``-sum of the top-out_dim eigenvalues of sum_m P_m``
      (Benton et al., 2017), one shared representation for all views;
    * ``reconstruction_weight > 0`` adds DCCAE's autoencoder term ``lambda sum_m ||x_m - g_m(h_m)||^2``
      (Wang, Arora, Livescu & Bilmes, "On Deep Multi-View Representation Learning", ICML 2015), with a
      decoder ``g_m`` per modality. The reconstruction target is detached, so the encoders cannot
      lower it by shrinking their outputs.

    The gradient reaches the encoders (the correlation shapes them); the projections are used only
    by this objective.

    Missing modalities: correlations need paired samples, so the correlation term uses only the
    samples where every modality it involves is present (per pair for ``"pairwise"``). With fewer
    than ``min_samples`` such samples in the batch, that term is zero. The reconstruction term uses
    each modality's present samples. Absent values are never read (``torch.where``).

    Args:
        dims: modality -> encoder width (filled in by the training module from its encoders).
        modalities: which modalities to correlate (default: all of ``dims``).
        out_dim: width ``o`` of the projections (the number of canonical correlations).
        hidden: hidden width of the projection MLPs (``0`` = linear).
        method: ``"cca"``, ``"pairwise"`` or ``"gcca"``.
        k: number of correlations summed for ``"cca"``/``"pairwise"`` (default ``out_dim``).
        reg: covariance ridge (``r1 = r2``).
        weight: multiplies the correlation loss. reconstruction_weight: DCCAE's ``lambda``.
        min_samples: the fewest paired samples for which the correlation term is computed.
    """

    def __init__(self, dims: Mapping[str, int], modalities: Sequence[str] | None = None, out_dim: int = 16,
                 hidden: int = 128, method: Method = "pairwise", k: int | None = None, reg: float = 1e-3,
                 weight: float = 0.1, reconstruction_weight: float = 0.0, min_samples: int | None = None) -> None:
        super().__init__()
        modalities = list(dims) if modalities is None else list(modalities)
        unknown = [m for m in modalities if m not in dims]
        if unknown:
            raise KeyError(f"CorrelationObjective: modalities {unknown} have no encoder; encoders: {list(dims)}")
        if len(modalities) < 2:
            raise ValueError(f"CorrelationObjective needs at least 2 modalities, got {modalities}")
        if method not in ("cca", "gcca", "pairwise"):
            raise ValueError(f"CorrelationObjective method must be 'cca', 'gcca' or 'pairwise', got {method!r}")
        if method == "cca" and len(modalities) != 2:
            raise ValueError(f"method='cca' correlates exactly 2 modalities, got {modalities}; "
                             "use 'pairwise' or 'gcca' for more")
        self.modalities, self.method = modalities, method
        self.out_dim, self.k, self.reg = out_dim, k, reg
        self.weight, self.reconstruction_weight = weight, reconstruction_weight
        self.min_samples = out_dim + 2 if min_samples is None else int(min_samples)
        self.projections = nn.ModuleDict({m: self._mlp(int(dims[m]), hidden, out_dim, norm=True) for m in modalities})
        self.decoders = nn.ModuleDict(
            {m: self._mlp(out_dim, hidden, int(dims[m]), norm=False) for m in modalities} if reconstruction_weight > 0
            else {})

    @staticmethod
    def _mlp(in_dim: int, hidden: int, out_dim: int, norm: bool) -> nn.Module:
        layers: list[nn.Module] = [nn.LayerNorm(in_dim)] if norm else []
        layers += [nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)] if hidden else \
            [nn.Linear(in_dim, out_dim)]
        return nn.Sequential(*layers)

    def project(self, encoded: Mapping[str, Encoded]) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """Pooled encodings ``(B, D_m)``, projections ``(B, out_dim)`` and presence ``(B,)`` per modality."""
        missing = [m for m in self.modalities if m not in encoded]
        if missing:
            raise KeyError(f"CorrelationObjective: no encoding for modalities {missing}; got {list(encoded)}")
        pooled, projected, present = {}, {}, {}
        for m in self.modalities:
            pooled[m] = encoded[m].pooled()
            present[m] = encoded[m].valid_mask().any(1)
            projected[m] = self.projections[m](pooled[m])
        return pooled, projected, present

    def correlation_loss(self, projected: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        """The correlation term on the paired samples (zero when too few).

        Computed in float32 at least, outside autocast: Cholesky and SVD need the precision.
        """
        device_type = next(iter(projected.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._correlation_loss({m: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
                                           for m, v in projected.items()}, present)

    def _correlation_loss(self, projected: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        zero = next(iter(projected.values())).new_zeros(())
        if self.method == "pairwise":
            total = zero
            for i, a in enumerate(self.modalities):
                for b in self.modalities[i + 1:]:
                    rows = present[a] & present[b]
                    if int(rows.sum()) >= self.min_samples:
                        total = total + pairwise_cca_loss([projected[a][rows], projected[b][rows]], self.k, self.reg)
            return total
        rows = torch.stack([present[m] for m in self.modalities]).all(0)
        if int(rows.sum()) < self.min_samples:
            return zero
        views = [projected[m][rows] for m in self.modalities]
        if self.method == "cca":
            return deep_cca_loss(views[0], views[1], self.k, self.reg)
        return gcca_loss(views, self.out_dim, self.reg)

    def forward(self, output: "ModelOutput", batch: Batch | None = None) -> dict[str, Tensor]:
        """Named, weighted losses of one forward pass: ``correlation`` (+ ``reconstruction`` for DCCAE)."""
        pooled, projected, present = self.project(output.encoded)
        losses = {"correlation": self.weight * self.correlation_loss(projected, present)}
        if self.decoders:
            terms = []
            for m in self.modalities:
                error = (self.decoders[m](projected[m]) - pooled[m].detach()).pow(2).mean(-1)
                error = zero_invalid(error, present[m])
                terms.append(error.sum() / present[m].sum().clamp_min(1))
            losses["reconstruction"] = self.reconstruction_weight * torch.stack(terms).sum()
        return losses

    def extra_repr(self) -> str:
        return (f"modalities={self.modalities}, method={self.method!r}, out_dim={self.out_dim}, "
                f"weight={self.weight}, reconstruction_weight={self.reconstruction_weight}")

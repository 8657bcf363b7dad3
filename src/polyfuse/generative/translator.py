"""Cross-modal translators: predict each modality's embedding from the other, present modalities.

The "translation" challenge of the survey (Baltrusaitis, Ahuja & Morency, "Multimodal Machine
Learning: A Survey and Taxonomy", TPAMI 2019), in embedding space: the missing-modality problem is
solved by inferring the absent modality from the present ones. Used by
:class:`~polyfuse.fusion.translation.TranslationFusion` to impute absent modalities.

A translator works on per-modality vectors ``x_m (B, D_m)`` with presence ``(B,)`` bool:

* ``translate(inputs, present) -> {m: (B, D_m)}``: each modality predicted from the present
  modalities *other than m* (leave-one-out, so training and test-time imputation see the same task);
* ``losses(inputs, present, targets) -> {name: scalar}``: its training loss.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from polyfuse.generative.mvae import MultimodalVAE
from polyfuse.masking import zero_invalid

__all__ = ["Translator", "RegressionTranslator", "VAETranslator", "build_translator"]


def _presence(inputs: Mapping[str, Tensor], present: Mapping[str, Tensor], modalities: list[str]) -> Tensor:
    first = next(iter(inputs.values()))
    absent = torch.zeros(first.shape[0], dtype=torch.bool, device=first.device)
    return torch.stack([present.get(m, absent) if m in inputs else absent for m in modalities])  # (M, B)


class Translator(nn.Module):
    """Interface of a cross-modal translator (see the module docstring)."""

    modalities: list[str]

    def translate(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def losses(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor],
               targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError


class RegressionTranslator(Translator):
    """Deterministic leave-one-out translation through a shared code.

    ``c_{-m} = mean_{s != m, s present} E_s(x_s)`` (``E_s``: Linear + GELU to ``hidden``), then
    ``x_hat_m = G_m(c_{-m})`` (MLP). Trained by the mean squared error ``||x_hat_m - x_m||^2`` (per
    dimension) on samples where ``m`` and at least one other modality are present. A sample with no
    other present modality decodes ``c = 0``, a learned constant. In the spirit of the cross-modal
    regression of Ngiam et al., "Multimodal Deep Learning", ICML 2011 (predict one modality's
    representation from another's) and of missing-modality imputation (Tran et al., CVPR 2017).

    Args:
        dims: modality -> width ``D_m``. hidden: code width.
    """

    def __init__(self, dims: Mapping[str, int], hidden: int = 128) -> None:
        super().__init__()
        self.modalities = list(dims)
        self.sources = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, hidden), nn.GELU()) for m, d in dims.items()})
        self.targets = nn.ModuleDict({m: nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, d))
                                      for m, d in dims.items()})

    def translate(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> dict[str, Tensor]:
        mask = _presence(inputs, present, self.modalities)  # (M, B)
        first = next(iter(inputs.values()))
        codes = []
        for i, m in enumerate(self.modalities):
            x = inputs[m] if m in inputs else first.new_zeros(first.shape[0], self.sources[m][0].in_features)
            x = zero_invalid(x, mask[i])
            codes.append(self.sources[m](x))
        codes_stacked = torch.stack(codes)  # (M, B, H)
        zero = torch.zeros((), dtype=codes_stacked.dtype, device=codes_stacked.device)
        out = {}
        for i, m in enumerate(self.modalities):
            others = mask.clone()
            others[i] = False
            weights = others.to(codes_stacked.dtype)[..., None]
            context = torch.where(others[..., None], codes_stacked, zero).sum(0) / weights.sum(0).clamp_min(1.0)
            out[m] = self.targets[m](context)
        return out

    def losses(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor],
               targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        mask = _presence(inputs, present, self.modalities)
        predicted = self.translate(inputs, present)
        has_source = mask.sum(0)[None] - mask.long() > 0  # (M, B): another modality is present
        out = {}
        for i, m in enumerate(self.modalities):
            if m not in targets:
                continue
            rows = mask[i] & has_source[i]
            target = zero_invalid(targets[m], rows)
            error = (predicted[m] - target).pow(2).mean(-1)
            out[m] = zero_invalid(error, rows).sum() / rows.sum().clamp_min(1)
        return out


class VAETranslator(Translator):
    """Translation by a multimodal VAE: decode modality ``m`` from the joint posterior of the others.

    MVAE (``posterior="poe"``; Wu & Goodman, 2018) or MMVAE (``"moe"``; Shi et al., 2019), see
    :class:`~polyfuse.generative.mvae.MultimodalVAE`; trained by its negative ELBO (reported as
    ``nelbo``) with reconstruction targets ``targets``. In training the translation decodes a
    posterior sample (so imputations carry the posterior's uncertainty), in eval the posterior mean.
    Options are passed to the VAE.
    """

    def __init__(self, dims: Mapping[str, int], **options: Any) -> None:
        super().__init__()
        self.vae = MultimodalVAE(dims, **options)
        self.modalities = list(self.vae.modalities)

    def translate(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> dict[str, Tensor]:
        mask = _presence(inputs, present, self.modalities)
        out = {}
        for i, m in enumerate(self.modalities):
            others = {s: mask[j] & (j != i) for j, s in enumerate(self.modalities)}
            out[m] = self.vae.predict(inputs, others, m, sample=self.training)
        return out

    def losses(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor],
               targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"nelbo": self.vae.elbo(inputs, present, targets)["loss"]}


def build_translator(kind: str, dims: Mapping[str, int], **options: Any) -> Translator:
    """``"regression"``, ``"mvae"`` (PoE) or ``"mmvae"`` (MoE) translator over ``dims``."""
    if kind == "regression":
        return RegressionTranslator(dims, **options)
    if kind in ("mvae", "mmvae"):
        return VAETranslator(dims, posterior="poe" if kind == "mvae" else "moe", **options)
    raise ValueError(f"unknown translator {kind!r}; expected 'regression', 'mvae' or 'mmvae'")

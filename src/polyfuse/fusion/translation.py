"""Translation fusion: impute an absent modality's embedding from the present ones, then concatenate."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.masking import masked_mean
from polyfuse.generative.translator import Translator, build_translator


@register("translation")
class TranslationFusion(Fusion):
    """Concatenation fusion whose absent modalities are filled by cross-modal translation.

    ``p_m = LayerNorm(pool(x_m))`` (masked mean over real tokens); a translator predicts every
    modality from the present others, ``p_hat_m = T_m({p_s : s != m, s present})``; then
    ``z = MLP([f_1; ...; f_M])`` with ``f_m = p_m`` if present, else ``p_hat_m``. This is
    :class:`~polyfuse.fusion.concat.ConcatFusion` with its learned "missing" embedding replaced by a
    per-sample prediction. "Translation" is the survey's term for mapping one modality to another
    (Baltrusaitis, Ahuja & Morency, TPAMI 2019); imputing missing modalities this way follows Tran,
    Liu, Zhou & Jin, "Missing Modalities Imputation via Cascaded Residual Autoencoder", CVPR 2017 and
    the multimodal VAEs (Wu & Goodman, NeurIPS 2018).

    Translators (``translator=``): ``"regression"`` (a shared code of the other modalities, MSE),
    ``"mvae"`` (product-of-experts VAE, negative ELBO over sub-sampled subsets) or ``"mmvae"``
    (mixture-of-experts VAE); see :mod:`polyfuse.generative.translator`.

    Training: the translator learns from the samples where the target modality is present (its
    leave-one-out prediction is compared with the real embedding, detached by ``detach_targets``);
    its weighted loss is returned in ``FusionOutput.aux_losses["translation/<key>"]``, which the
    training module adds to the task loss. The task loss also reaches the translator through
    imputed samples when modalities are missing in training (``data.missing_train``, modality dropout).

    Padding: excluded by the masked mean. Missing modalities: an absent modality's values are never
    read (``torch.where``); it is replaced by its translation from the present modalities, or by the
    translator's learned constant when no other modality is present.

    Args:
        dims, out_dim: see :class:`Fusion`. hidden: MLP hidden width (``0`` = one linear layer).
        dropout: dropout inside the MLP. translator: ``"regression"``, ``"mvae"``, ``"mmvae"`` or a
            :class:`Translator`. translator_options: keyword options of the translator (e.g.
            ``hidden``, ``latent_dim``, ``beta``). loss_weight: weight of the translator's loss
            (``0`` = no auxiliary loss). detach_targets: the translation targets carry no gradient
            (so encoders cannot make translation easy by collapsing). detach_inputs: the
            translator's inputs carry no gradient, so translation does not shape the encoders (on
            AV-digits letting it do so cost clean accuracy: see docs/alignment.md).
    """

    min_modalities = 2

    def __init__(self, dims: Mapping[str, int], out_dim: int, hidden: int = 256, dropout: float = 0.1,
                 translator: str | Translator = "regression", translator_options: Mapping[str, Any] | None = None,
                 loss_weight: float = 1.0, detach_targets: bool = True, detach_inputs: bool = True) -> None:
        super().__init__(dims, out_dim)
        self.norms = nn.ModuleDict({m: nn.LayerNorm(d) for m, d in self.dims.items()})
        self.translator = translator if isinstance(translator, Translator) else \
            build_translator(translator, self.dims, **dict(translator_options or {}))
        self.loss_weight, self.detach_targets, self.detach_inputs = loss_weight, detach_targets, detach_inputs
        total = sum(self.dims.values())
        if hidden:
            self.mlp = nn.Sequential(nn.Linear(total, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))
        else:
            self.mlp = nn.Linear(total, out_dim)

    def embeddings(self, inputs: dict[str, Encoded]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Normalised pooled embeddings ``(B, D_m)`` and presence ``(B,)`` of the sanitised inputs."""
        pooled = {m: self.norms[m](masked_mean(enc.tokens, enc.mask)) for m, enc in inputs.items()}
        return pooled, {m: enc.present_or_full() for m, enc in inputs.items()}

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        pooled, present = self.embeddings(inputs)
        sources = {m: p.detach() for m, p in pooled.items()} if self.detach_inputs else pooled
        predicted = self.translator.translate(sources, present)
        filled = [torch.where(present[m][:, None], pooled[m], predicted[m].to(pooled[m].dtype)) for m in self.modalities]
        aux = {}
        if self.loss_weight > 0:
            targets = {m: p.detach() for m, p in pooled.items()} if self.detach_targets else pooled
            aux = {f"translation/{key}": self.loss_weight * value
                   for key, value in self.translator.losses(sources, present, targets).items()}
        return FusionOutput(pooled=self.mlp(torch.cat(filled, dim=-1)), aux_losses=aux)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, loss_weight={self.loss_weight}"

"""Per-modality contribution by ablation: remove one modality (or keep only one) and measure.

Removing a modality marks it absent for every sample (``present=False``), so each fusion applies
its own missing-modality strategy -- the same mechanism as the missing-modality robustness curves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import pandas as pd
import torch
from torch import Tensor

from polyfuse.batch import Batch
from polyfuse.robustness.evaluate import scalar_metrics, with_encodings
from polyfuse.robustness.missing import drop_modalities

if TYPE_CHECKING:  # annotations only: running a model needs no import of the model zoo
    from polyfuse.models.multimodal import MultimodalModel

__all__ = ["ablation_settings", "modality_contributions", "sample_contributions"]


def ablation_settings(modalities: list[str]) -> dict[str, list[str]]:
    """Setting name -> modalities removed: ``all``, ``without <m>``, ``only <m>`` (for >= 2 modalities)."""
    settings: dict[str, list[str]] = {"all": []}
    if len(modalities) > 1:
        settings.update({f"without {m}": [m] for m in modalities})
        settings.update({f"only {m}": [o for o in modalities if o != m] for m in modalities})
    return settings


def _outputs(model: MultimodalModel, batch: Batch, removed: list[str], clean: dict) -> object:
    drop = torch.ones(batch.batch_size, dtype=torch.bool)
    encoded = drop_modalities(clean, removed, drop) if removed else clean
    with with_encodings(model, encoded):
        return model(batch).outputs


@torch.no_grad()
def modality_contributions(model: MultimodalModel, batches: Iterable[Batch]) -> pd.DataFrame:
    """The head's metrics for every ablation setting over ``batches``, plus the change against
    ``all`` (``delta_<metric>``): one row per setting."""
    was_training = model.training
    model.eval()
    settings = ablation_settings(list(model.modalities))
    metrics = {name: model.head.make_metrics() for name in settings}
    try:
        for batch in batches:
            clean = model.encode(batch)
            for name, removed in settings.items():
                model.head.update_metrics(metrics[name], _outputs(model, batch, removed, clean), batch)
    finally:
        model.train(was_training)
    rows = [{"setting": name, **{k.split("/")[-1]: v for k, v in scalar_metrics(metrics[name].compute()).items()}}
            for name in settings]
    frame = pd.DataFrame(rows)
    for column in [c for c in frame.columns if c != "setting"]:
        frame[f"delta_{column}"] = frame[column] - frame.loc[0, column]
    return frame


@torch.no_grad()
def sample_contributions(model: MultimodalModel, batch: Batch, target: Tensor) -> pd.DataFrame:
    """Per sample of ``batch``: probability of ``target`` (B,) class with all modalities and in each
    ablation setting (classification heads, whose outputs are logits ``(B, C)``)."""
    was_training = model.training
    model.eval()
    try:
        clean = model.encode(batch)
        rows = []
        for name, removed in ablation_settings(list(model.modalities)).items():
            logits = _outputs(model, batch, removed, clean)
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                raise TypeError("sample_contributions needs a classification head returning logits (B, C)")
            probs = logits.float().softmax(-1).gather(1, target.view(-1, 1)).squeeze(1)
            rows += [{"sample": i, "setting": name, "p_target": float(p)} for i, p in enumerate(probs)]
    finally:
        model.train(was_training)
    return pd.DataFrame(rows)

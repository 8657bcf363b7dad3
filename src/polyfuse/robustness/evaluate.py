"""Evaluate a trained model under missing and corrupted modalities, uniformly for any fusion.

One pass over the evaluation loader: each batch is encoded once; every perturbation then changes
only what it needs -- a missing-modality perturbation flips ``present`` on the cached encodings, a
corruption re-encodes the one modality it corrupts -- and runs the rest of the model's forward
(fusion, head) through :meth:`MultimodalModel.forward`. Random draws come from generators seeded by
``(seed, batch, perturbation)``, so results are reproducible and nested across levels: a sample
dropped at rate 0.3 is also dropped at 0.5, and a noise pattern is the same at every severity.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from polyfuse.batch import Batch, Encoded
from polyfuse.robustness.corruptions import CORRUPTIONS, corrupt, corruptions_for
from polyfuse.robustness.missing import drop_modalities, modality_subsets, subset_name
from polyfuse.data.loader import mix_seed

if TYPE_CHECKING:  # annotations only: running a model needs no import of the model zoo
    from polyfuse.models.multimodal import MultimodalModel

__all__ = ["RobustnessConfig", "evaluate_robustness", "evaluate_clean", "with_encodings", "scalar_metrics",
           "DEFAULT_LEVELS"]

DEFAULT_LEVELS = tuple(round(0.1 * i, 1) for i in range(11))  # MultiBench's 0, 0.1, ..., 1


@dataclass
class RobustnessConfig:
    """What to perturb and how much.

    Attributes:
        rates: fractions of samples whose modality subset is dropped (must start at 0).
        subsets: ``"all"`` non-empty modality subsets or ``"single"`` modalities.
        severities: corruption severities in ``[0, 1]`` (must start at 0).
        corruptions: modality -> corruption names; ``None`` = every corruption defined for the
            model's modalities (see :mod:`polyfuse.robustness.corruptions`); ``{}`` = none.
        missing: evaluate missing modalities at all. seed: seeds every random draw.
        options: extra keyword arguments per corruption name (e.g. ``{"noise_snr": {"snr_min_db": -20}}``).
    """

    rates: Sequence[float] = DEFAULT_LEVELS
    subsets: str = "all"
    severities: Sequence[float] = DEFAULT_LEVELS
    corruptions: Mapping[str, Sequence[str]] | None = None
    missing: bool = True
    seed: int = 0
    options: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, levels in (("rates", self.rates), ("severities", self.severities)):
            if not levels or float(levels[0]) != 0.0 or any(not 0 <= float(v) <= 1 for v in levels):
                raise ValueError(f"robustness {name} must start at 0 and lie in [0, 1], got {list(levels)}")

    def corruption_list(self, modalities: Sequence[str]) -> list[tuple[str, str]]:
        """``(modality, corruption)`` pairs for the model's modalities."""
        if self.corruptions is None:
            return [(m, name) for m in modalities for name in corruptions_for(m)]
        pairs = []
        for modality, names in self.corruptions.items():
            if modality not in modalities:
                continue
            for name in names:
                if name not in CORRUPTIONS or CORRUPTIONS[name][0] != modality:
                    raise ValueError(f"corruption {name!r} is not defined for {modality!r}; "
                                     f"available for {modality}: {corruptions_for(modality)}")
                pairs.append((modality, name))
        return pairs


@contextmanager
def with_encodings(model: MultimodalModel, encoded: dict[str, Encoded]) -> Iterator[None]:
    """Make ``model(batch)`` use ``encoded`` instead of encoding the batch (shadows ``model.encode``
    for the duration), so perturbations of encodings run through the model's own forward."""
    model.encode = lambda batch: encoded  # type: ignore[method-assign]
    try:
        yield
    finally:
        del model.encode


def _generator(*values: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(*values))


def scalar_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The one-element tensors and numbers of a metric ``compute()`` result, as floats."""
    out = {}
    for key, value in values.items():
        if isinstance(value, Tensor) and value.numel() == 1:
            out[key] = float(value)
        elif isinstance(value, (int, float)):
            out[key] = float(value)
    return out


@torch.no_grad()
def evaluate_robustness(model: MultimodalModel, batches: Iterable[Batch], config: RobustnessConfig | None = None,
                        device: torch.device | str = "cpu", pad_values: Mapping[str, int] | None = None
                        ) -> list[dict[str, Any]]:
    """Metrics of ``model`` for every perturbation and level over ``batches``.

    Returns one record per (perturbation, level): ``{"kind": "missing" | "corruption",
    "perturbation": "missing:audio" | "image:blur", "modalities": "audio", "level": 0.3,
    <metric>: value, ...}`` with the head's metrics (e.g. ``acc``, ``f1_macro``).
    """
    config = config or RobustnessConfig()
    head = model.head
    was_training = model.training
    model.eval().to(device)
    plans: list[tuple[str, str, str, Sequence[float]]] = []  # kind, perturbation, modalities, levels
    subsets = modality_subsets(model.modalities, config.subsets) if config.missing else []
    for subset in subsets:
        plans.append(("missing", f"missing:{subset_name(subset)}", subset_name(subset), config.rates))
    corruption_pairs = config.corruption_list(model.modalities)
    for modality, name in corruption_pairs:
        plans.append(("corruption", f"{modality}:{name}", modality, config.severities))
    metrics = {(plan[1], float(level)): head.make_metrics().to(device) for plan in plans for level in plan[3]}
    try:
        for index, batch in enumerate(batches):
            batch = batch.to(device)
            clean = model.encode(batch)
            size = batch.batch_size
            for number, subset in enumerate(subsets):
                draws = torch.rand(size, generator=_generator(config.seed, index, number))
                for rate in config.rates:
                    encoded = drop_modalities(clean, subset, draws < rate) if rate > 0 else clean
                    with with_encodings(model, encoded):
                        outputs = model(batch).outputs
                    head.update_metrics(metrics[(f"missing:{subset_name(subset)}", float(rate))], outputs, batch)
            for number, (modality, name) in enumerate(corruption_pairs):
                options = dict(config.options.get(name, {}))
                if name == "token_dropout" and pad_values and modality in pad_values:
                    options.setdefault("pad_id", int(pad_values[modality]))
                for severity in config.severities:
                    encoded = dict(clean)
                    if severity > 0:
                        generator = _generator(config.seed, index, 1000 + number)
                        corrupted = corrupt(name, batch.inputs[modality], severity, generator, **options)
                        encoded[modality] = model.encoders[modality](corrupted)
                    with with_encodings(model, encoded):
                        outputs = model(batch).outputs
                    head.update_metrics(metrics[(f"{modality}:{name}", float(severity))], outputs, batch)
    finally:
        model.train(was_training)
    records = []
    for kind, perturbation, modalities, levels in plans:
        for level in levels:
            values = scalar_metrics(metrics[(perturbation, float(level))].compute())
            records.append({"kind": kind, "perturbation": perturbation, "modalities": modalities,
                            "level": float(level), **{key.split("/")[-1]: v for key, v in values.items()}})
    return records


@torch.no_grad()
def evaluate_clean(model: MultimodalModel, batches: Iterable[Batch], device: torch.device | str = "cpu"
                   ) -> dict[str, float]:
    """The head's metrics of ``model`` on unperturbed ``batches``."""
    was_training = model.training
    model.eval().to(device)
    metrics = model.head.make_metrics().to(device)
    try:
        for batch in batches:
            batch = batch.to(device)
            model.head.update_metrics(metrics, model(batch).outputs, batch)
    finally:
        model.train(was_training)
    return {key.split("/")[-1]: value for key, value in scalar_metrics(metrics.compute()).items()}

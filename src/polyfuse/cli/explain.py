"""``polyfuse-explain``: attention maps and per-modality contributions of a trained run (PNG + CSV).

Examples::

    polyfuse-explain run_dir=outputs/train/runs/<time>
    polyfuse-explain run_dir=<run> samples=[0,5,7] split=test_real

For each chosen sample, ``<run>/explain/sample_<n>_<id>.png`` shows: the image with the ViT's
attention rollout from [CLS] over its patches; every fusion attention map (last layer per
``query->key`` pair, averaged over heads and queries) drawn on the key modality -- a heat map over
image patches, bars over text tokens, a curve over audio frames; the text encoder's rollout over
tokens; and the probability of the true class with each modality removed / alone. Fusions
without attention (concat, late, ...) get the encoder maps and the ablation.
``contributions.{csv,png}``: the same ablation over the whole split.

``polyfuse-explain interactions <run> ...``: redundancy / uniqueness / synergy of two modalities
(:mod:`polyfuse.cli.interactions`).
"""

from __future__ import annotations

import sys
from itertools import islice
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from torch import Tensor

from polyfuse.batch import Batch
from polyfuse.cli.config import config_dir, register_resolvers
from polyfuse.cli.errors import user_errors
from polyfuse.cli.validate import validate_config
from polyfuse.cli.eval import evaluation_loader
from polyfuse.reporting.attention import (AttentionMaps, attention_rollout, collect_attention, parse_map_name,
                                          query_average)
from polyfuse.reporting.explain_plots import (Panel, contribution_panel, draw_panels, frames_panel, image_panel,
                                              normalised, plot_contributions, token_panel)
from polyfuse.reporting.runs import load_model
from polyfuse.robustness.ablation import modality_contributions, sample_contributions

register_resolvers()


def _patch_layout(encoder: Any) -> tuple[int, int] | None:
    """``(grid, prefix tokens)`` of a ViT-style encoder, else None."""
    grid = getattr(getattr(encoder, "patch_embed", None), "grid", None)
    return None if grid is None else (int(grid), int(getattr(encoder, "num_prefix_tokens", 0)))


def _is_token_ids(values: Tensor) -> bool:
    return values.dim() == 2 and not values.is_floating_point()


def _tokens(dataset: Any, ids: Tensor, mask: Tensor | None) -> list[str]:
    tokenizer = getattr(dataset, "tokenizer", None)
    real = ids if mask is None else ids[mask]
    if tokenizer is not None and hasattr(tokenizer, "id_to_token"):
        return [str(tokenizer.id_to_token(int(i))) for i in real]
    return [str(int(i)) for i in real]


def sample_panels(model: Any, batch: Batch, index: int, maps: AttentionMaps, dataset: Any) -> list[Panel]:
    """The attention panels of sample ``index`` of ``batch``."""
    panels: list[Panel] = []
    inputs = batch.inputs
    layouts = {m: _patch_layout(model.encoders[m]) for m in model.modalities}
    for modality, blocks in maps.encoders.items():
        flow = attention_rollout([b[index:index + 1] for b in blocks])[0]  # (L, L)
        layout = layouts.get(modality)
        if layout is not None and modality in inputs:
            grid, prefix = layout
            weights = flow[0, prefix:] if prefix else flow.mean(0)
            panels.append(image_panel(inputs[modality].values[index], weights[-grid * grid:], grid,
                                      f"{modality} encoder: attention rollout"))
        elif modality in inputs and _is_token_ids(inputs[modality].values):
            mask = inputs[modality].mask[index] if inputs[modality].mask is not None else None
            weights = flow[0] if mask is None else flow[0][mask]
            panels.append(token_panel(_tokens(dataset, inputs[modality].values[index], mask), normalised(weights),
                                      f"{modality} encoder: rollout from first token"))
    last: dict[tuple[str, str], tuple[int, Tensor]] = {}
    for name, probs in maps.fusion.items():
        parsed = parse_map_name(name)
        if parsed is not None and (parsed[:2] not in last or parsed[2] >= last[parsed[:2]][0]):
            last[parsed[:2]] = (parsed[2], probs)
    for (query, key), (layer, probs) in sorted(last.items()):
        weights = query_average(probs[index:index + 1])[0]
        title = f"fusion {query}->{key} (layer {layer})"
        layout = layouts.get(key)
        if layout is not None and key in inputs and weights.numel() >= layout[0] ** 2:
            grid = layout[0]
            panels.append(image_panel(inputs[key].values[index], weights[-grid * grid:], grid, title))
        elif key in inputs and _is_token_ids(inputs[key].values):
            mask = inputs[key].mask[index] if inputs[key].mask is not None else None
            tokens = _tokens(dataset, inputs[key].values[index], mask)
            panels.append(token_panel(tokens, normalised(weights[: len(tokens)]), title))
        else:
            panels.append(frames_panel(weights, title))
    return panels


def explain_run(cfg: DictConfig) -> dict[str, Path]:
    """Write the explanation figures of ``cfg.run_dir``; returns the files by name."""
    validate_config(cfg)
    run_dir = Path(cfg.run_dir)
    module, run_cfg = load_model(run_dir, cfg.checkpoint, trust_config=bool(cfg.get("trust_config", False)))
    model = module.model.eval()
    loader = evaluation_loader(run_cfg, cfg.split, int(cfg.batch_size))
    out = run_dir / cfg.output_subdir
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    indices = [int(i) for i in cfg.samples]
    size = len(loader.dataset)
    bad = [i for i in indices if not 0 <= i < size]
    if bad:
        raise IndexError(f"samples {bad} are outside split {cfg.split!r} (0..{size - 1})")
    batch = loader.collate_fn([loader.dataset[i] for i in indices])
    maps = collect_attention(model, batch)
    labels = batch.targets.get("label")
    per_sample = sample_contributions(model, batch, labels) if labels is not None and isinstance(maps.logits, Tensor) \
        and maps.logits.dim() == 2 else None
    for position, index in enumerate(indices):
        panels = sample_panels(model, batch, position, maps, loader.dataset)
        title = f"{run_dir.name}: sample {index} (id {batch.ids[position]})"
        if labels is not None and isinstance(maps.logits, Tensor) and maps.logits.dim() == 2:
            probs = maps.logits[position].float().softmax(-1)
            title += f", label {int(labels[position])}, predicted {int(probs.argmax())} (p={float(probs.max()):.2f})"
        if per_sample is not None:
            panels.append(contribution_panel(per_sample[per_sample["sample"] == position], "modality ablation"))
        name = f"sample_{index}_{batch.ids[position]}.png"
        files[name] = draw_panels(panels, out / name, title)
    if cfg.ablation:
        batches = list(islice(iter(loader), cfg.max_batches) if cfg.get("max_batches") else loader)
        contributions = modality_contributions(model, batches)
        files["contributions.csv"] = out / "contributions.csv"
        contributions.to_csv(files["contributions.csv"], index=False)
        metric = model.head.monitor if model.head.monitor in contributions.columns else contributions.columns[1]
        files["contributions.png"] = plot_contributions(contributions, metric, out / "contributions.png",
                                                        f"{run_dir.name}: {metric} on {cfg.split} by modality ablation")
    return files


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="explain")
def explain_main(cfg: DictConfig) -> None:
    with user_errors("polyfuse-explain"):
        files = explain_run(cfg)
    for name, path in sorted(files.items()):
        print(f"polyfuse-explain: {name}: {path}")


def main() -> None:
    """``polyfuse-explain [overrides]`` (Hydra), or ``polyfuse-explain interactions RUN [options]``
    (:mod:`polyfuse.cli.interactions`)."""
    if len(sys.argv) > 1 and sys.argv[1] == "interactions":
        from polyfuse.cli.interactions import main as interactions_main

        raise SystemExit(interactions_main(sys.argv[2:]))
    explain_main()


if __name__ == "__main__":
    main()

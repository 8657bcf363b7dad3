"""Figures for ``polyfuse-explain``: attention over image patches, text tokens and audio frames, and
per-modality contributions."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Panel", "patch_heatmap", "image_panel", "token_panel", "frames_panel", "contribution_panel",
           "draw_panels", "plot_contributions", "normalised"]

Panel = Callable[["object"], None]  # draws into a matplotlib Axes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _display_image(image: Tensor) -> Tensor:
    """``(C, H, W)`` -> ``(H, W)`` or ``(H, W, 3)`` scaled to [0, 1] for ``imshow``."""
    image = image.detach().float().cpu()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
    return image[0] if image.shape[0] == 1 else image[:3].permute(1, 2, 0)


def patch_heatmap(weights: Tensor, grid: int, size: tuple[int, int]) -> Tensor:
    """``(grid * grid,)`` patch weights -> ``(H, W)`` heat map (bilinear upsampling, scaled to [0, 1])."""
    heat = weights.detach().float().cpu().reshape(1, 1, grid, grid)
    heat = F.interpolate(heat, size=size, mode="bilinear", align_corners=False)[0, 0]
    return (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-8)


def image_panel(image: Tensor, weights: Tensor, grid: int, title: str) -> Panel:
    """The image with a patch-attention heat map overlaid."""
    def draw(ax) -> None:
        shown = _display_image(image)
        ax.imshow(shown, cmap="gray" if shown.dim() == 2 else None)
        ax.imshow(patch_heatmap(weights, grid, tuple(shown.shape[:2])), cmap="jet", alpha=0.45)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    return draw


def token_panel(tokens: Sequence[str], weights: Tensor, title: str) -> Panel:
    """Token-level attention as bars under the tokens."""
    def draw(ax) -> None:
        values = weights.detach().float().cpu().tolist()
        colours = _pyplot().get_cmap("viridis")([v / max(max(values), 1e-8) for v in values])
        ax.bar(range(len(values)), values, color=colours)
        ax.set_xticks(range(len(tokens)), tokens, rotation=60, ha="right", fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.tick_params(axis="y", labelsize=6)
    return draw


def frames_panel(weights: Tensor, title: str) -> Panel:
    """Attention over (audio) frames as a curve."""
    def draw(ax) -> None:
        values = weights.detach().float().cpu()
        ax.fill_between(range(len(values)), values.tolist(), alpha=0.4)
        ax.plot(values.tolist(), linewidth=1)
        ax.set_xlabel("frame", fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
    return draw


def contribution_panel(frame: pd.DataFrame, title: str) -> Panel:
    """Probability of the target class per ablation setting (one sample)."""
    def draw(ax) -> None:
        colours = ["#4c72b0" if s == "all" else "#dd8452" if s.startswith("without") else "#55a868"
                   for s in frame["setting"]]
        ax.barh(frame["setting"], frame["p_target"], color=colours)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("p(target)", fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
    return draw


def draw_panels(panels: Sequence[Panel], path: str | Path, title: str, columns: int = 4) -> Path:
    """Lay out panels in a grid and save the PNG."""
    plt = _pyplot()
    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.0 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        panel(ax)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_contributions(frame: pd.DataFrame, metric: str, path: str | Path, title: str) -> Path:
    """Dataset-level ablation: ``metric`` per setting (all / without m / only m)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 0.45 * len(frame) + 1.2))
    colours = ["#4c72b0" if s == "all" else "#dd8452" if s.startswith("without") else "#55a868"
               for s in frame["setting"]]
    bars = ax.barh(frame["setting"], frame[metric], color=colours)
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in frame[metric]], fontsize=7, padding=2)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_xlim(0, max(1.0, float(frame[metric].max()) * 1.1))
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def normalised(weights: Tensor) -> Tensor:
    """Scale to sum 1 (for comparable bars)."""
    weights = weights.detach().float().clamp_min(0)
    return weights / weights.sum().clamp_min(1e-12)

"""Shared pieces of the encoder parity tests: tolerance, diff, small reference models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

TOL = 1e-5  # max abs difference allowed between polyfuse and the source model (fp32, CPU)
REPO_ROOT = Path(__file__).resolve().parents[2]


def require_package(name: str) -> None:
    """Skip unless the weights package ``name`` is installed (found, not imported: some import torch eagerly)."""
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} not installed (optional pretrained-weights extra)")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def randomise_norms(model: torch.nn.Module) -> None:
    """LayerNorms start at (1, 0); perturb them so a mis-mapped norm cannot pass unnoticed."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.2)


def tiny_clip(quick_gelu: bool = False):
    open_clip = pytest.importorskip("open_clip")
    vision = open_clip.model.CLIPVisionCfg(layers=2, width=64, head_width=16, patch_size=8, image_size=32)
    text = open_clip.model.CLIPTextCfg(context_length=12, vocab_size=100, width=32, heads=2, layers=2)
    torch.manual_seed(0)
    model = open_clip.model.CLIP(embed_dim=24, vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu).eval()
    randomise_norms(model)
    config = {"embed_dim": 24, "quick_gelu": quick_gelu,
              "vision_cfg": {"layers": 2, "width": 64, "head_width": 16, "patch_size": 8, "image_size": 32},
              "text_cfg": {"context_length": 12, "vocab_size": 100, "width": 32, "heads": 2, "layers": 2}}
    return model, config

"""Image preprocessing matching each checkpoint source (torchvision v2 transforms).

A pretrained image encoder computes what its source computed only on inputs prepared the same way:
same resize (interpolation, shortest side), centre crop and normalisation. :func:`image_transform`
builds that pipeline for ``open_clip``, ``timm``, ``torchvision`` and Hugging Face checkpoints; it
accepts PIL images (bit-exact with open_clip/timm, which resize with PIL) or ``uint8`` tensors
``(C, H, W)`` and returns ``float32 (C, S, S)``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch
from torchvision.transforms import InterpolationMode, v2

from polyfuse.encoders.loading import CheckpointError, resolve_path

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
SOURCES = ("open_clip", "timm", "torchvision", "hf")
PIL_RESAMPLE = {0: InterpolationMode.NEAREST, 1: InterpolationMode.LANCZOS, 2: InterpolationMode.BILINEAR,
                3: InterpolationMode.BICUBIC}


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float], crop_pct: float = 1.0,
                   interpolation: InterpolationMode = InterpolationMode.BICUBIC,
                   resize: str = "shortest", resize_tensors: bool = False) -> v2.Compose:
    """Resize (shortest side to ``floor(size / crop_pct)``, or ``"squash"`` to a square), centre
    crop ``image_size``, scale to ``[0, 1]`` and normalise per channel.

    ``resize_tensors=False`` resizes a PIL input with PIL (as open_clip and timm do);
    ``True`` converts to a tensor first and resizes with torch (as torchvision's weight transforms).
    """
    scale = math.floor(image_size / crop_pct)
    if resize == "squash":
        resizing = v2.Resize((scale, scale), interpolation=interpolation, antialias=True)
    elif resize == "shortest":
        resizing = v2.Resize(scale, interpolation=interpolation, antialias=True)
    else:
        raise ValueError(f"resize must be 'shortest' or 'squash', got {resize!r}")
    geometry = [resizing, v2.CenterCrop(image_size)]
    steps = [v2.ToImage(), *geometry] if resize_tensors else [*geometry, v2.ToImage()]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def hf_image_transform(directory: str | Path) -> v2.Compose:
    """The eval transform of a Hugging Face ``preprocessor_config.json`` (ViT image processors)."""
    path = resolve_path(directory) / "preprocessor_config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read image preprocessing config {path}: {error}") from error
    size = config.get("size", {"height": 224, "width": 224})
    if "height" not in size or size["height"] != size["width"]:
        raise CheckpointError(f"{path}: only square 'size' {{height, width}} is supported, got {size}")
    interpolation = PIL_RESAMPLE.get(int(config.get("resample", 2)), InterpolationMode.BILINEAR)
    steps: list[v2.Transform] = []
    if config.get("do_resize", True):
        steps.append(v2.Resize((size["height"], size["width"]), interpolation=interpolation, antialias=True))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=bool(config.get("do_rescale", True)))]
    if config.get("do_normalize", True):
        steps.append(v2.Normalize(list(config.get("image_mean", INCEPTION_MEAN)),
                                  list(config.get("image_std", INCEPTION_STD))))
    return v2.Compose(steps)


def image_transform(source: str, image_size: int = 224, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, crop_pct: float | None = None,
                    directory: str | Path | None = None) -> v2.Compose:
    """The eval-time transform of a checkpoint source.

    * ``open_clip``: bicubic shortest-side resize to ``image_size``, centre crop, OpenAI CLIP
      statistics (open_clip's ``image_transform(..., is_train=False)``).
    * ``timm``: bicubic resize to ``image_size / crop_pct`` (default 0.9), centre crop, ImageNet
      statistics unless given (timm ``create_transform``; augreg ViTs use ``mean=std=0.5``).
    * ``torchvision``: bilinear resize to ``image_size / 0.875``, centre crop, ImageNet statistics.
    * ``hf``: read ``preprocessor_config.json`` from ``directory``.
    """
    if source == "open_clip":
        return eval_transform(image_size, mean or OPENAI_CLIP_MEAN, std or OPENAI_CLIP_STD, crop_pct or 1.0)
    if source == "timm":
        return eval_transform(image_size, mean or IMAGENET_MEAN, std or IMAGENET_STD, crop_pct or 0.9)
    if source == "torchvision":
        return eval_transform(image_size, mean or IMAGENET_MEAN, std or IMAGENET_STD, crop_pct or 0.875,
                              InterpolationMode.BILINEAR, resize_tensors=True)
    if source == "hf":
        if directory is None:
            raise ValueError("image_transform('hf') needs the checkpoint directory")
        return hf_image_transform(directory)
    raise ValueError(f"unknown image source {source!r}; valid: {', '.join(SOURCES)}")

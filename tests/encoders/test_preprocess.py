"""Image preprocessing: the transform for each source equals that source's own eval transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from polyfuse.encoders.preprocess import image_transform

from .parity_helpers import max_diff


@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (10, 13, 3)), np.ones((6, 6, 1)))  # 60x78, non-square
    return Image.fromarray(smooth.astype(np.uint8))


def test_open_clip(photo):
    open_clip = pytest.importorskip("open_clip")
    expected = open_clip.image_transform(32, is_train=False)(photo)
    assert max_diff(image_transform("open_clip", 32)(photo), expected) <= 1e-6


def test_timm(photo):
    timm_data = pytest.importorskip("timm.data")
    expected = timm_data.create_transform(input_size=(3, 32, 32), crop_pct=0.9, interpolation="bicubic")(photo)
    assert max_diff(image_transform("timm", 32)(photo), expected) <= 1e-6


def test_torchvision(photo):
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()  # metadata only, no download
    expected = reference(photo)
    assert max_diff(image_transform("torchvision", 224)(photo), expected) <= 1e-6


def test_hugging_face(tmp_path, photo):
    transformers = pytest.importorskip("transformers")
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    processor.save_pretrained(tmp_path)
    expected = processor(images=photo, return_tensors="pt")["pixel_values"][0]
    ours = image_transform("hf", directory=tmp_path)(photo)
    assert ours.shape == expected.shape == (3, 32, 32)
    assert max_diff(ours, expected) <= 1.01 / 255 / 0.5  # HF rounds its resized uint8 differently: <= 1 grey level
    assert (ours - expected).abs().mean() <= 1e-4


def test_unknown_source():
    with pytest.raises(ValueError, match="unknown image source"):
        image_transform("caffe")

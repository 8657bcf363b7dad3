"""Image pipeline: decoding paths and bytes, train/eval transforms from config, JPEG draft decoding."""

from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from polyfuse.data import DataFileError, EncodedMedia, ImagePipeline
from polyfuse.data.io import load_image

from .media import corrupt, write_image


def test_eval_and_train_transforms_give_normalised_fixed_size_tensors(tmp_path):
    path = write_image(tmp_path / "a.png", size=(40, 32))
    pipeline = ImagePipeline(size=16, mode="RGB")
    eval_image = pipeline(path)
    assert eval_image.shape == (3, 16, 16) and eval_image.dtype == torch.float32 and type(eval_image) is torch.Tensor
    assert torch.equal(eval_image, pipeline(path))  # deterministic
    assert pipeline(path, train=True).shape == (3, 16, 16)
    grey = ImagePipeline(size=8, mode="L", resize="squash")(path)
    assert grey.shape == (1, 8, 8) and -1.0 <= grey.min() and grey.max() <= 1.0


def test_randaugment_and_flips_come_from_config(tmp_path):
    config = OmegaConf.create({"_target_": "polyfuse.data.ImagePipeline", "size": 16, "augment": [
        {"_target_": "torchvision.transforms.v2.RandomHorizontalFlip"},
        {"_target_": "torchvision.transforms.v2.RandAugment", "num_ops": 2, "magnitude": 9}]})
    pipeline = hydra.utils.instantiate(config)
    path = write_image(tmp_path / "a.jpg")
    torch.manual_seed(0)
    augmented = [pipeline(path, train=True) for _ in range(3)]
    assert not torch.equal(augmented[0], augmented[1]) and augmented[0].shape == (3, 16, 16)


def test_encoded_bytes_decode_like_the_file_and_draft_is_close(tmp_path):
    path = write_image(tmp_path / "big.jpg", size=(256, 256))
    assert torch.equal(load_image(EncodedMedia(path.read_bytes(), "shard.tar:k.jpg"), "RGB"), load_image(path, "RGB"))
    assert load_image(path, "RGB", draft_size=(64, 64)).shape == (3, 64, 64)  # decoded at 1/4 scale
    smooth = torch.linspace(0, 255, 256).round().to(torch.uint8).expand(3, 256, 256).clone()
    from torchvision.io import write_jpeg

    write_jpeg(smooth, str(tmp_path / "smooth.jpg"), quality=95)
    fast, full = ImagePipeline(size=32, jpeg_draft=True), ImagePipeline(size=32, jpeg_draft=False)
    assert (fast(tmp_path / "smooth.jpg") - full(tmp_path / "smooth.jpg")).abs().mean() < 0.05


def test_bad_images_and_bad_config_raise_clear_errors(tmp_path):
    with pytest.raises(DataFileError, match="cannot decode image file .*bad.jpg"):
        ImagePipeline(size=8)(corrupt(tmp_path / "bad.jpg"))
    with pytest.raises(DataFileError, match="image file not found: .*none.png"):
        ImagePipeline(size=8)(tmp_path / "none.png")
    with pytest.raises(ValueError, match="mean/std need 3 values"):
        ImagePipeline(mean=[0.5], std=[0.5])


def test_fused_scale_normalize_matches_todtype_then_normalize():
    from torchvision.transforms import v2

    from polyfuse.data.image import ScaleNormalize

    image = torch.randint(0, 256, (3, 9, 7), dtype=torch.uint8).permute(0, 2, 1)  # non-contiguous
    mean, std = [0.48, 0.45, 0.41], [0.27, 0.26, 0.28]
    reference = v2.Normalize(mean, std)(v2.ToDtype(torch.float32, scale=True)(image))
    torch.testing.assert_close(ScaleNormalize(mean, std)(image), reference, rtol=1e-6, atol=1e-6)

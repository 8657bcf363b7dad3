"""Video encoders: inflation reproduces the image ViT on a static clip, padding frames change nothing,
absent clips are zeros, every parameter gets a gradient."""

from __future__ import annotations

import pytest
import torch

from polyfuse.batch import ModalityInput
from polyfuse.encoders import FrameTemporalEncoder, VideoViTEncoder, ViTEncoder


def _vit(**kwargs) -> ViTEncoder:
    torch.manual_seed(0)
    vit = ViTEncoder(image_size=16, patch_size=4, in_chans=3, dim=32, depth=2, heads=4, mlp_ratio=2.0, **kwargs)
    with torch.no_grad():  # non-trivial norms, so a mis-copied one shows
        for module in vit.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.2)
    return vit.eval()


@pytest.mark.parametrize("tubelet, inflation", [(1, "central"), (2, "central"), (2, "mean")])
def test_inflated_divided_model_reproduces_the_image_model_on_a_static_clip(tubelet, inflation) -> None:
    vit = _vit(pre_norm=True)
    video = VideoViTEncoder.from_image(vit, num_frames=4, tubelet_size=tubelet, inflation=inflation).eval()
    image = torch.randn(2, 3, 16, 16)
    static = image[:, None].expand(-1, 4, -1, -1, -1)
    tokens, image_tokens = video(static).tokens, vit(image).tokens
    steps = 4 // tubelet
    assert tokens.shape == (2, 1 + steps * 16, 32)
    torch.testing.assert_close(tokens[:, 0], image_tokens[:, 0], atol=1e-5, rtol=1e-5)  # [CLS]
    torch.testing.assert_close(tokens[:, 1:].view(2, steps, 16, 32), image_tokens[:, None, 1:].expand(-1, steps, -1, -1),
                               atol=1e-5, rtol=1e-5)
    moving = torch.randn(2, 4, 3, 16, 16)
    with torch.no_grad():  # once temporal attention is on, time matters: the check above can fail
        for block in video.blocks:
            block.temporal_fc.weight.normal_(0.0, 0.2)
    assert not torch.allclose(video(static).tokens[:, 0], image_tokens[:, 0], atol=1e-3)
    assert video(moving).tokens.isfinite().all()


def test_pooled_projected_vit_inflates_to_a_pooled_projected_video_encoder() -> None:
    vit = _vit(output="pooled", proj_dim=8, proj_bias=False)
    video = VideoViTEncoder.from_image(vit, num_frames=2).eval()
    image = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(video(image[:, None].expand(-1, 2, -1, -1, -1)).tokens, vit(image).tokens,
                               atol=1e-5, rtol=1e-5)


def _encoders() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    frame = lambda: ViTEncoder(image_size=8, patch_size=4, in_chans=1, dim=16, depth=1, heads=2, output="pooled")
    return {
        "divided": VideoViTEncoder(image_size=8, patch_size=4, in_chans=1, num_frames=4, dim=16, depth=2, heads=2),
        "joint_tubelet": VideoViTEncoder(image_size=8, patch_size=4, in_chans=1, num_frames=4, tubelet_size=2,
                                         attention="joint", dim=16, depth=1, heads=2),
        "factorised": FrameTemporalEncoder(frame(), temporal="transformer", depth=1, heads=2, max_frames=4),
        "mean": FrameTemporalEncoder(frame(), temporal="mean", max_frames=4),
        "seq": FrameTemporalEncoder(frame(), temporal="seq", depth=1, heads=2, max_frames=4),
    }


@pytest.mark.parametrize("name", list(_encoders()))
def test_padding_frames_change_nothing_and_absent_clips_are_zeros(name) -> None:
    encoder = _encoders()[name].eval()
    clip = torch.randn(3, 4, 1, 8, 8)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [False] * 4])
    present = torch.tensor([True, True, False])
    first = encoder(ModalityInput(clip, mask, present))
    changed = clip.clone()
    changed[1, 2:] = torch.randn(2, 1, 8, 8) * 10
    changed[2] = 5.0
    second = encoder(ModalityInput(changed, mask, present))
    torch.testing.assert_close(first.tokens, second.tokens)
    assert first.tokens.isfinite().all() and torch.all(first.tokens[2] == 0)
    alone = encoder(ModalityInput(clip[1:2, :2])).pooled()  # the short clip on its own, unpadded
    torch.testing.assert_close(first.pooled()[1:2], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(_encoders()))
def test_every_parameter_gets_a_gradient(name) -> None:
    encoder = _encoders()[name].train()
    with torch.no_grad():  # zero-initialised output layers would stop gradients to the layers before them
        for parameter_name, parameter in encoder.named_parameters():
            if parameter.abs().sum() == 0:
                parameter.normal_(0.0, 0.1)
    clip = torch.randn(2, 4, 1, 8, 8)
    encoder(ModalityInput(clip, torch.tensor([[True] * 4, [True, True, True, False]]))).pooled().square().sum().backward()
    missing = [n for n, p in encoder.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_seq_starts_as_mean_pooling_and_factorised_pools_its_cls() -> None:
    encoders = _encoders()
    encoders["seq"].frame_encoder.load_state_dict(encoders["mean"].frame_encoder.state_dict())
    clip, mask = torch.randn(2, 4, 1, 8, 8), torch.tensor([[True] * 4, [True, False, False, False]])
    mean = encoders["mean"].eval()(ModalityInput(clip, mask)).pooled()
    seq = encoders["seq"].eval()(ModalityInput(clip, mask)).pooled()
    torch.testing.assert_close(seq, 2 * mean)  # CLIP4Clip adds the frame embeddings back: x + T(x)
    factorised = FrameTemporalEncoder(encoders["mean"].frame_encoder, output="pooled", depth=1, heads=2, max_frames=4)
    assert factorised(ModalityInput(clip, mask)).tokens.shape == (2, 1, 16)


def test_wrong_shapes_and_frame_encoders_name_what_was_expected() -> None:
    with pytest.raises(ValueError, match="pooled frame encoder"):
        FrameTemporalEncoder(ViTEncoder(output="tokens"))
    with pytest.raises(ValueError, match=r"expects clips \(B, T <= 4, 1, 8, 8\)"):
        _encoders()["divided"](torch.randn(2, 5, 1, 8, 8))

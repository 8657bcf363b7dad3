"""CLIP4Clip on polyfuse CLIP: meanP of a static clip is CLIP's image embedding, seqTransf starts as
meanP, retrieval scores a matching video-caption diagonal."""

from __future__ import annotations

import pytest
import torch

from polyfuse.encoders import CLIPTextEncoder, ViTEncoder
from polyfuse.models import CLIP, CLIP4Clip


def _clip() -> CLIP:
    torch.manual_seed(0)
    visual = ViTEncoder(image_size=16, patch_size=8, in_chans=3, dim=32, depth=1, heads=2, pre_norm=True,
                        output="pooled", proj_dim=16, proj_bias=False, eps=1e-5)
    text = CLIPTextEncoder(vocab_size=20, context_length=8, dim=32, depth=1, heads=2, proj_dim=16, pool="last")
    return CLIP(visual, text).eval()


@pytest.mark.parametrize("temporal", ["mean", "seq"])
def test_static_clip_embeds_like_its_frame(temporal: str) -> None:
    clip = _clip()
    model = CLIP4Clip(clip, temporal=temporal, depth=1, max_frames=4).eval()
    images = torch.randn(3, 3, 16, 16)
    static = images[:, None].expand(-1, 4, -1, -1, -1)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True] * 4])
    torch.testing.assert_close(model.encode_video(static, mask, normalize=True), clip.encode_image(images, normalize=True),
                               atol=1e-5, rtol=1e-5)


def test_forward_retrieval_and_gradients() -> None:
    model = CLIP4Clip(_clip(), temporal="seq", depth=1, max_frames=4).train()
    video, tokens = torch.randn(4, 3, 3, 16, 16), torch.randint(1, 20, (4, 8))
    video_features, text_features, scale = model(video, None, tokens)
    assert video_features.shape == text_features.shape == (4, 16)
    logits = scale * video_features @ text_features.T
    torch.nn.functional.cross_entropy(logits, torch.arange(4)).backward()
    assert model.video.blocks[0].mlp.fc2.weight.grad.abs().sum() > 0  # the temporal transformer learns
    scores = model.retrieval(video, None, tokens, ks=(1, 2), batch_size=3)
    assert {"video_to_text/R@1", "text_to_video/R@2", "rsum"} <= set(scores)

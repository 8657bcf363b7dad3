"""Every fusion takes the video modality -- frame tokens with a frame mask, or a pooled clip -- next to
audio, with either one missing for some samples, and padding frames change nothing."""

from __future__ import annotations

import pytest
import torch

from polyfuse.batch import Encoded, ModalityInput
from polyfuse.encoders import FrameTemporalEncoder, ViTEncoder

from .fusion_cases import SMALL, make_fusion

DIMS = {"video": 16, "audio": 8}


def _encoded(output: str, clips: torch.Tensor) -> dict:
    torch.manual_seed(0)
    frame = ViTEncoder(image_size=8, patch_size=4, in_chans=1, dim=16, depth=1, heads=2, output="pooled")
    encoder = FrameTemporalEncoder(frame, depth=1, heads=2, max_frames=4, output=output).eval()
    frame_mask = torch.tensor([[True] * 4, [True, True, False, False], [True] * 4, [True, False, False, False]])
    video = encoder(ModalityInput(clips, frame_mask, torch.tensor([True, True, False, True])))
    generator = torch.Generator().manual_seed(1)
    audio_mask = torch.tensor([[True] * 3, [True] * 3, [True, True, False], [True] * 3])
    audio = Encoded(torch.randn(4, 3, 8, generator=generator), audio_mask, torch.tensor([True, False, True, True]))
    return {"video": video, "audio": audio}


@pytest.mark.parametrize("output", ["tokens", "pooled"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_fusion_takes_video_with_missing_modalities_and_ignores_padding_frames(name: str, output: str) -> None:
    fusion = make_fusion(name, dims=DIMS).eval()
    clips = torch.randn(4, 4, 1, 8, 8)
    changed = clips.clone()
    changed[1, 2:] = 7.0  # padding frames
    changed[2] = -3.0     # an absent clip
    with torch.no_grad():
        first = fusion(_encoded(output, clips)).pooled
        second = fusion(_encoded(output, changed)).pooled
    assert first.shape[0] == 4 and first.isfinite().all()
    torch.testing.assert_close(first, second, atol=1e-5, rtol=1e-5)

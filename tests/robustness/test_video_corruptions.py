"""Video corruptions: frame drop shortens the clip and its mask, temporal shuffle permutes real frames only."""

from __future__ import annotations

import torch

from polyfuse.batch import ModalityInput
from polyfuse.robustness import corrupt, corruptions_for


def _clips() -> ModalityInput:
    frames = torch.arange(8, dtype=torch.float32).view(1, 8, 1, 1, 1).expand(3, 8, 1, 2, 2).clone()
    mask = torch.tensor([[True] * 8, [True] * 5 + [False] * 3, [True] * 8])
    frames[1, 5:] = 0.0
    return ModalityInput(frames, mask=mask, present=torch.tensor([True, True, False]))


def _order(inputs: ModalityInput, sample: int) -> list[int]:
    return inputs.values[sample, inputs.mask[sample], 0, 0, 0].long().tolist()


def test_video_corruptions_are_registered() -> None:
    assert set(corruptions_for("video")) == {"frame_drop", "temporal_shuffle"}


def test_frame_drop_keeps_order_shrinks_with_severity_and_never_empties_a_clip() -> None:
    clips = _clips()
    assert corrupt("frame_drop", clips, 0.0, torch.Generator()) is clips
    half = corrupt("frame_drop", clips, 0.5, torch.Generator().manual_seed(0))
    most = corrupt("frame_drop", clips, 0.9, torch.Generator().manual_seed(0))
    for sample in range(3):
        kept = _order(half, sample)
        assert kept == sorted(kept) and set(kept) <= set(_order(clips, sample))  # real frames, in order
        assert set(_order(most, sample)) <= set(kept)  # the same draws: more severity drops a superset
        assert 1 <= most.mask[sample].sum() <= half.mask[sample].sum() < clips.mask[sample].sum()
    everything = corrupt("frame_drop", clips, 1.0, torch.Generator().manual_seed(0))
    assert everything.mask.sum(1).tolist() == [1, 1, 1]
    assert torch.equal(everything.present, clips.present)


def test_temporal_shuffle_permutes_only_the_real_frames() -> None:
    clips = _clips()
    shuffled = corrupt("temporal_shuffle", clips, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(shuffled.mask, clips.mask) and torch.all(shuffled.values[1, 5:] == 0)
    for sample in range(3):
        assert sorted(_order(shuffled, sample)) == _order(clips, sample)
    assert _order(shuffled, 0) != _order(clips, 0)

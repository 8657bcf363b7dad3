"""CoAttentionFusion: every stream cross-attends to the others, then to itself."""

from __future__ import annotations

import torch

from .fusion_cases import make_fusion, make_inputs


def test_maps_in_every_direction():
    module = make_fusion("co_attention").eval()
    with torch.no_grad():
        out = module(make_inputs(), return_attention=True)
    names = ("image", "audio", "text")
    expected = {f"{a}->{b}/layer{i}" for a in names for b in names for i in range(2)}
    assert set(out.attentions) == expected


def test_streams_interact():
    """Each stream's tokens depend on the other modalities (two-stream co-attention, not independent)."""
    module = make_fusion("co_attention").eval()
    inputs = make_inputs(presence=torch.ones(8, 3, dtype=torch.bool))
    changed = dict(inputs)
    changed["audio"] = type(inputs["audio"])(inputs["audio"].tokens + 1, inputs["audio"].mask, inputs["audio"].present)
    with torch.no_grad():
        a, b = module(inputs), module(changed)
    image_tokens = slice(0, inputs["image"].tokens.shape[1])
    assert not torch.allclose(a.tokens[:, image_tokens], b.tokens[:, image_tokens])


def test_absent_stream_is_one_missing_token():
    module = make_fusion("co_attention").eval()
    inputs = make_inputs()
    with torch.no_grad():
        out = module(inputs)
    length = inputs["image"].tokens.shape[1]
    absent = ~inputs["image"].present
    assert (out.mask[absent, :length].sum(1) == 1).all()

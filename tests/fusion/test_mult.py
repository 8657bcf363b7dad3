"""MultimodalTransformer (MulT): M (M - 1) crossmodal transformers, then self-attention per target."""

from __future__ import annotations

import torch

from .fusion_cases import make_fusion, make_inputs


def test_one_crossmodal_transformer_per_ordered_pair():
    module = make_fusion("mult")
    names = ("image", "audio", "text")
    assert set(module.crossmodal) == {f"{s}->{t}" for s in names for t in names if s != t}


def test_maps_and_token_layout():
    module = make_fusion("mult").eval()
    inputs = make_inputs()
    with torch.no_grad():
        out = module(inputs, return_attention=True)
    names = ("image", "audio", "text")
    assert set(out.attentions) == ({f"{t}->{s}/layer0" for t in names for s in names if s != t}
                                   | {f"{t}->{t}/layer0" for t in names})
    assert out.tokens.shape[1] == sum(enc.tokens.shape[1] for enc in inputs.values())
    probs = out.attentions["image->audio/layer0"]
    assert torch.all(probs[~inputs["audio"].present] == 0)  # absent source: no attention at all

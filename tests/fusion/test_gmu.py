"""GatedMultimodalUnit: element-wise gates over the present modalities."""

from __future__ import annotations

import torch

from .fusion_cases import make_fusion, make_inputs


def test_two_modalities_match_the_sigmoid_form_of_the_paper():
    dims = {"image": 12, "text": 10}
    module = make_fusion("gmu", dims=dims, dropout=0.0).eval()
    presence = torch.ones(4, 2, dtype=torch.bool)
    inputs = make_inputs(presence=presence, dims=dims, batch=4)
    with torch.no_grad():
        x = {m: module.norms[m](enc.pooled()) for m, enc in inputs.items()}
        h_v, h_t = torch.tanh(module.hidden["image"](x["image"])), torch.tanh(module.hidden["text"](x["text"]))
        logits = module.gate(torch.cat([x["image"], x["text"]], -1)).view(4, 2, -1)
        z = torch.sigmoid(logits[:, 0] - logits[:, 1])
        torch.testing.assert_close(module(inputs).pooled, z * h_v + (1 - z) * h_t)


def test_single_present_modality_gets_gate_one():
    module = make_fusion("gmu", dropout=0.0).eval()
    inputs = make_inputs()
    with torch.no_grad():
        x = module.norms["image"](inputs["image"].pooled())
        torch.testing.assert_close(module(inputs).pooled[1], torch.tanh(module.hidden["image"](x))[1])

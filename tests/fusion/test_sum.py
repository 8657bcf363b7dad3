"""SumFusion / MeanFusion: projections added, or averaged over the present modalities."""

from __future__ import annotations

import torch
from torch import nn

from .fusion_cases import make_fusion, make_inputs


def fused(name: str) -> torch.Tensor:
    module = make_fusion(name, dropout=0.0).eval()
    module.out = nn.Identity()  # look at the fused vector itself
    with torch.no_grad():
        return module(make_inputs()).pooled


def test_sum_is_mean_times_number_present():
    count = torch.stack([enc.present for enc in make_inputs().values()], 1).sum(1, keepdim=True).float()
    torch.testing.assert_close(fused("sum"), fused("mean") * count)


def test_mean_of_one_present_modality_is_its_projection():
    module = make_fusion("mean", dropout=0.0).eval()
    module.out = nn.Identity()
    inputs = make_inputs()
    with torch.no_grad():
        only_text = module.proj["text"](module.norms["text"](inputs["text"].pooled()))
        torch.testing.assert_close(module(inputs).pooled[3], only_text[3])  # sample 3: text only

"""Tiny fusion test cases: sizes, options and batches with ragged padding and missing modalities."""

from __future__ import annotations

import torch

from polyfuse import fusion
from polyfuse.batch import Encoded

DIMS = {"image": 12, "audio": 8, "text": 10}
LENGTHS = {"image": 5, "audio": 4, "text": 3}
OUT_DIM = 16
BATCH = 8

# Tiny options per registered fusion, so the whole suite stays fast on CPU.
SMALL: dict[str, dict] = {
    "concat": {"hidden": 16},
    "sum": {},
    "mean": {},
    "late": {"hidden": 16},
    "gmu": {},
    "film": {"depth": 1},
    "bilinear": {"factor": 3},
    "tensor": {"hidden_per_modality": 4, "hidden": 16},
    "lmf": {"hidden_per_modality": 6, "rank": 3},
    "early": {"heads": 2, "depth": 2},
    "hybrid": {"heads": 2, "hidden": 16},
    "cross_attention": {"heads": 2, "depth": 2},
    "co_attention": {"heads": 2, "depth": 2},
    "mult": {"heads": 2, "width": 8, "depth": 1},
    "mbt": {"heads": 2, "depth": 2, "bottlenecks": 2},
    "perceiver": {"heads": 2, "latents": 4, "depth": 2},
    "translation": {"hidden": 16, "translator_options": {"hidden": 8}},
    "linear_connector": {},
    "mlp_connector": {"hidden": 16},
    "resampler_connector": {"heads": 2, "latents": 3, "depth": 1},
    "qformer_connector": {"heads": 2, "queries": 3, "depth": 2, "cross_attention_freq": 2},
}

# Every sample pattern of (image, audio, text) presence that keeps at least one modality; each
# modality is absent for some samples and present for others.
PRESENCE = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1],
                         [1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=torch.bool)


def make_fusion(name: str, dims: dict[str, int] | None = None, **options) -> fusion.Fusion:
    torch.manual_seed(0)
    return fusion.build(name, dims=dims or DIMS, out_dim=OUT_DIM, **{**SMALL.get(name, {}), **options})


def make_inputs(seed: int = 0, presence: torch.Tensor | None = None, dims: dict[str, int] | None = None,
                batch: int = BATCH) -> dict[str, Encoded]:
    """Random tokens with ragged padding (a different number of real tokens per sample)."""
    generator = torch.Generator().manual_seed(seed)
    dims = dims or DIMS
    presence = PRESENCE[:batch] if presence is None else presence
    out = {}
    for index, (name, dim) in enumerate(dims.items()):
        length = LENGTHS.get(name, 3)
        lengths = torch.randint(1, length + 1, (batch,), generator=generator)
        lengths[0] = length
        mask = torch.arange(length)[None, :] < lengths[:, None]
        present = presence[:, index] if index < presence.shape[1] else torch.ones(batch, dtype=torch.bool)
        out[name] = Encoded(torch.randn(batch, length, dim, generator=generator), mask, present.clone())
    return out


CONNECTORS = {"linear_connector", "mlp_connector", "resampler_connector", "qformer_connector"}
TOKEN_LEVEL = {"early", "hybrid", "cross_attention", "co_attention", "mult", "mbt", "perceiver", "film"} | CONNECTORS
ATTENTION = {"early", "hybrid", "cross_attention", "co_attention", "mult", "mbt", "perceiver"}

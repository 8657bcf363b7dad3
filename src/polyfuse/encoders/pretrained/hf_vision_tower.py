"""A Hugging Face vision tower (e.g. ``CLIPVisionModel``) as a polyfuse image encoder, LLaVA's way.

LLaVA (Liu et al., 2023) feeds the language model the patch features of the *penultimate* layer of
CLIP's vision tower (``vision_feature_layer=-2``) without the [CLS] token
(``vision_feature_select_strategy="default"``; ``"full"`` keeps it). A list of layers concatenates
their features along the width, as Hugging Face's ``LlavaModel.get_image_features`` does.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from polyfuse.encoders.base import Encoder

STRATEGIES = ("default", "full")


class HFVisionTowerEncoder(Encoder):
    """Wrap a Hugging Face vision model: ``pixel_values (B, C, H, W)`` -> tokens ``(B, L, D * #layers)``.

    Args:
        tower: a module called as ``tower(pixel_values, output_hidden_states=True)`` whose output has
            ``hidden_states`` (embeddings first, then one entry per layer) and whose config has
            ``hidden_size``.
        feature_layer: index into ``hidden_states`` (``-2``: penultimate layer), or a list of them.
        select_strategy: ``"default"`` drops the first ([CLS]) token, ``"full"`` keeps every token.
        output, proj_dim, freeze: see :class:`~polyfuse.encoders.base.Encoder`.

    Every image gives the same number of tokens (no padding mask); absent samples come out as zeros.
    """

    def __init__(self, tower: nn.Module, feature_layer: int | Sequence[int] = -2, select_strategy: str = "default",
                 output: str = "tokens", proj_dim: int | None = None, freeze: bool = False) -> None:
        if select_strategy not in STRATEGIES:
            raise ValueError(f"vision select_strategy must be one of {STRATEGIES}, got {select_strategy!r}")
        layers = [feature_layer] if isinstance(feature_layer, int) else [int(i) for i in feature_layer]
        width = int(tower.config.hidden_size) * len(layers)
        super().__init__(width, output=output, proj_dim=proj_dim, has_cls=select_strategy == "full",  # type: ignore[arg-type]
                         pool="cls" if select_strategy == "full" else "mean")
        self.tower, self.layers, self.select_strategy = tower, layers, select_strategy
        if freeze:
            self.freeze(True)

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        hidden = self.tower(values, output_hidden_states=True).hidden_states
        selected = [hidden[i] for i in self.layers]
        if self.select_strategy == "default":
            selected = [h[:, 1:] for h in selected]
        return torch.cat(selected, dim=-1), None

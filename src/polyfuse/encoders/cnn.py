"""A convolutional image encoder beside the ViT: MobileNetV2 (Sandler et al., 2018), torchvision layout."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.encoders.base import Encoder, Output


class MobileNetV2Encoder(Encoder):
    """MobileNetV2 feature extractor: images ``(B, C, H, W)`` -> grid tokens ``(B, h * w, 1280)``.

    The body is torchvision's ``mobilenet_v2(...).features`` (parameter names ``features.N.*``),
    so torchvision ImageNet state dicts load unchanged
    (:func:`polyfuse.encoders.pretrained.mobilenet_v2_from_torchvision`). Images have no padding
    (mask ``None``); ``output="pooled"`` is the spatial mean, i.e. torchvision's pre-logits
    feature. Small inputs can be upsampled first (``input_size``), since the network downsamples
    32x. Frozen batch-norm layers keep their ImageNet statistics (see :meth:`Encoder.freeze`).

    Args:
        in_chans: input channels (the first convolution is built for them; a pretrained RGB
            filter bank is adapted on load). width_mult: torchvision's width multiplier.
        input_size: resize inputs to ``input_size x input_size`` (bilinear) before the network.
        output, proj_dim, freeze: as for every encoder (``freeze(N)``: stem + first N of 18 blocks).
    """

    def __init__(self, in_chans: int = 3, width_mult: float = 1.0, input_size: int | None = None,
                 output: Output = "tokens", proj_dim: int | None = None, pool: str | None = None,
                 freeze: int | bool = False) -> None:
        from torchvision.models import mobilenet_v2

        net = mobilenet_v2(weights=None, width_mult=width_mult)
        super().__init__(net.last_channel, output, proj_dim, has_cls=False, pool=pool)
        stem = net.features[0][0]
        if in_chans != stem.in_channels:
            net.features[0][0] = nn.Conv2d(in_chans, stem.out_channels, stem.kernel_size, stem.stride,
                                           stem.padding, bias=False)
            nn.init.kaiming_normal_(net.features[0][0].weight, mode="fan_out")
        self.features = net.features
        self.in_chans, self.input_size = in_chans, input_size
        self.freeze(freeze)

    def encode(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, None]:
        """``values: (B, C, H, W)`` -> ``(tokens (B, h * w, D), None)``, ``h = H' / 32``."""
        if values.dim() != 4 or values.shape[1] != self.in_chans:
            raise ValueError(f"MobileNetV2Encoder expects images (B, {self.in_chans}, H, W), got {tuple(values.shape)}")
        if self.input_size is not None and tuple(values.shape[-2:]) != (self.input_size,) * 2:
            values = F.interpolate(values, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        return self.features(values).flatten(2).transpose(1, 2), None

    def stem_modules(self) -> list[nn.Module]:
        return [self.features[0]]

    def blocks_for_freezing(self) -> list[nn.Module]:
        return list(self.features[1:])

"""Image decoding + torchvision v2 transforms for the training and evaluation splits."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode, v2

from polyfuse.data.io import MediaSource, open_image

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ScaleNormalize:
    """``uint8 (C, H, W)`` -> ``float32 (x / 255 - mean) / std`` in one pass: the result of
    ``v2.ToDtype(float32, scale=True)`` then ``v2.Normalize(mean, std)``, at less than half the cost."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_t

    def __call__(self, image: Tensor) -> Tensor:
        pixels = image.as_subclass(Tensor).contiguous().to(torch.float32)
        return torch.addcmul(self.shift, pixels, self.scale)


class ImagePipeline:
    """Decode an image file and turn it into a normalised ``float32 (C, size, size)`` tensor.

    Evaluation: resize the shortest side to ``size`` (or squash to a square), centre crop.
    Training: ``RandomResizedCrop(size, scale=train_crop_scale)`` (or the evaluation resize when
    it is ``None``), then the ``augment`` transforms (any torchvision v2 transforms on ``uint8``
    image tensors, e.g. ``RandomHorizontalFlip``, ``RandAugment(num_ops=2, magnitude=9)``, built by
    Hydra from ``_target_`` entries), then scaling to ``[0, 1]`` and ``Normalize(mean, std)``.
    Resizing runs on the decoded PIL image (PIL's resampling is the fastest on CPU), the rest on
    tensors.

    Args:
        size: output side in pixels. mode: PIL mode, ``"RGB"`` (3 channels) or ``"L"`` (1).
        mean, std: per-channel normalisation (defaults: ImageNet; one value per channel).
        resize: ``"shortest"`` (keep aspect, centre crop) or ``"squash"`` (to a square).
        train_crop_scale: area range of the training ``RandomResizedCrop``; ``None`` = no crop.
        augment: extra training-only transforms, applied after the crop.
        jpeg_draft: decode JPEGs at a reduced scale when the image is at least twice ``size``
            (PIL ``draft``: several times faster, nearly identical after resizing).
        interpolation: ``"bilinear"`` or ``"bicubic"``.
    """

    def __init__(self, size: int = 224, mode: str = "RGB", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, resize: str = "shortest",
                 train_crop_scale: Sequence[float] | None = (0.5, 1.0),
                 augment: Sequence[Callable[[Tensor], Tensor]] = (), jpeg_draft: bool = True,
                 interpolation: str = "bicubic") -> None:
        if mode not in ("RGB", "L"):
            raise ValueError(f"image mode must be 'RGB' or 'L', got {mode!r}")
        if resize not in ("shortest", "squash"):
            raise ValueError(f"image resize must be 'shortest' or 'squash', got {resize!r}")
        channels = 3 if mode == "RGB" else 1
        mean = list(mean) if mean is not None else list(IMAGENET_MEAN[:channels] if channels == 3 else [0.5])
        std = list(std) if std is not None else list(IMAGENET_STD[:channels] if channels == 3 else [0.5])
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"image mean/std need {channels} values for mode {mode!r}, got {mean} / {std}")
        self.size, self.mode, self.channels, self.jpeg_draft = int(size), mode, channels, jpeg_draft
        modes = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
        if interpolation not in modes:
            raise ValueError(f"image interpolation must be one of {list(modes)}, got {interpolation!r}")
        method = modes[interpolation]
        if resize == "squash":
            eval_resize: list[v2.Transform] = [v2.Resize((self.size, self.size), interpolation=method, antialias=True)]
        else:
            eval_resize = [v2.Resize(self.size, interpolation=method, antialias=True), v2.CenterCrop(self.size)]
        finish = [ScaleNormalize(mean, std)]
        train_resize = eval_resize if train_crop_scale is None else [
            v2.RandomResizedCrop(self.size, scale=tuple(train_crop_scale), interpolation=method, antialias=True)]
        self.eval_transform = v2.Compose([*eval_resize, v2.ToImage(), *finish])
        self.train_transform = v2.Compose([*train_resize, v2.ToImage(), *augment, *finish])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Output shape ``(C, size, size)`` (the collate fallback when a whole batch lacks images)."""
        return (self.channels, self.size, self.size)

    def decode(self, source: MediaSource) -> Any:
        """The decoded PIL image of a path or :class:`~polyfuse.data.io.EncodedMedia`."""
        draft = (2 * self.size, 2 * self.size) if self.jpeg_draft else None
        return open_image(source, self.mode, draft_size=draft)

    def __call__(self, source: MediaSource, train: bool = False) -> Tensor:
        """``float32 (C, size, size)``; raises :class:`~polyfuse.data.io.DataFileError` naming a bad file."""
        output = (self.train_transform if train else self.eval_transform)(self.decode(source))
        return output.as_subclass(torch.Tensor)

"""Modality corruptions at a severity in ``[0, 1]`` (0 = clean input, returned unchanged).

Every corruption maps ``(inputs: ModalityInput, severity, generator) -> ModalityInput`` and draws its
randomness from ``generator`` only, so an evaluation is reproducible and the same noise pattern is
scaled across severities (curves are smooth, not re-sampled at every level). Absent samples
(``present=False``) stay absent; padding stays padding.

====================  ========  ==============================================================
name                  modality  severity ``s`` means
====================  ========  ==============================================================
``gaussian_noise``    image     additive Gaussian noise, std = ``s`` x the image's own std
``blur``              image     Gaussian blur, sigma = ``s`` x 10% of the image side
``occlusion``         image     a random square covering a fraction ``s`` of the area, filled
                                with the image's mean
``noise_snr``         audio     white noise at SNR ``30 - 40 s`` dB (30 dB ... -10 dB)
``token_dropout``     text      each token (not the first/last: [CLS]/[SEP]) removed with
                                probability ``s``; the sequence is compacted
``token_shuffle``     text      a fraction ``s`` of the inner tokens permuted among themselves
``frame_drop``        video     each frame of a clip removed with probability ``s`` (at least
                                one kept); the clip is compacted and its frame mask shortened
``temporal_shuffle``  video     a fraction ``s`` of a clip's frames permuted among themselves
====================  ========  ==============================================================
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from polyfuse.batch import ModalityInput
from polyfuse.masking import masked_mean

__all__ = ["CORRUPTIONS", "Corruption", "corrupt", "corruptions_for"]

Corruption = Callable[[ModalityInput, float, torch.Generator], ModalityInput]


def _check_severity(severity: float) -> float:
    if not 0.0 <= float(severity) <= 1.0:
        raise ValueError(f"corruption severity must be in [0, 1], got {severity}")
    return float(severity)


def gaussian_noise(inputs: ModalityInput, severity: float, generator: torch.Generator) -> ModalityInput:
    """Images ``(B, C, H, W)``: ``x + s * std(x) * N(0, 1)``, std per image."""
    values = inputs.values
    noise = torch.randn(values.shape, generator=generator, dtype=values.dtype).to(values.device)
    scale = values.flatten(1).std(dim=1).view(-1, *([1] * (values.dim() - 1)))
    return replace(inputs, values=values + severity * scale * noise)


def blur(inputs: ModalityInput, severity: float, generator: torch.Generator, max_sigma: float = 0.1) -> ModalityInput:
    """Images ``(B, C, H, W)``: Gaussian blur with sigma ``s * max_sigma * side`` pixels."""
    values = inputs.values
    sigma = severity * max_sigma * min(values.shape[-2:])
    if sigma < 1e-3:
        return inputs
    kernel = 2 * math.ceil(3 * sigma) + 1
    kernel = min(kernel, 2 * (min(values.shape[-2:]) // 2) - 1)
    return replace(inputs, values=TF.gaussian_blur(values, kernel_size=[kernel, kernel], sigma=[sigma, sigma]))


def occlusion(inputs: ModalityInput, severity: float, generator: torch.Generator) -> ModalityInput:
    """Images ``(B, C, H, W)``: one square patch covering ``s`` of the area, set to the image mean.

    The patch position is drawn once per image (same place at every severity, growing with ``s``).
    """
    values = inputs.values.clone()
    height, width = values.shape[-2:]
    corners = torch.rand(values.shape[0], 2, generator=generator)
    side_h, side_w = round(math.sqrt(severity) * height), round(math.sqrt(severity) * width)
    if side_h == 0 or side_w == 0:
        return inputs
    means = values.flatten(1).mean(dim=1)
    for sample in range(values.shape[0]):
        top = int(corners[sample, 0] * (height - side_h + 1))
        left = int(corners[sample, 1] * (width - side_w + 1))
        values[sample, ..., top:top + side_h, left:left + side_w] = means[sample]
    return replace(inputs, values=values)


def noise_snr(inputs: ModalityInput, severity: float, generator: torch.Generator, snr_max_db: float = 30.0,
              snr_min_db: float = -10.0) -> ModalityInput:
    """Waveforms ``(B, T)``: white noise at ``snr_max_db - s (snr_max_db - snr_min_db)`` dB SNR.

    Signal power is measured over the real (unpadded) samples; padding stays zero.
    """
    values = inputs.values
    valid = inputs.mask if inputs.mask is not None else torch.ones_like(values, dtype=torch.bool)
    snr_db = snr_max_db - severity * (snr_max_db - snr_min_db)
    power = masked_mean(values.pow(2), valid)
    noise = torch.randn(values.shape, generator=generator, dtype=values.dtype).to(values.device)
    noise_std = torch.sqrt(power / 10.0 ** (snr_db / 10.0)).unsqueeze(1)
    return replace(inputs, values=torch.where(valid, values + noise_std * noise, values))


def _inner_positions(mask: Tensor) -> list[Tensor]:
    """Per sample, the indices of real tokens except the first and the last ([CLS]/[SEP])."""
    return [torch.nonzero(row, as_tuple=False).flatten()[1:-1] for row in mask]


def token_dropout(inputs: ModalityInput, severity: float, generator: torch.Generator,
                  pad_id: int = 0) -> ModalityInput:
    """Token ids ``(B, L)``: drop each inner token with probability ``s`` and close the gaps."""
    values, mask = inputs.values, inputs.mask
    if mask is None:
        mask = torch.ones_like(values, dtype=torch.bool)
    draws = torch.rand(values.shape, generator=generator).to(values.device)
    keep = mask.clone()
    for sample, inner in enumerate(_inner_positions(mask)):
        keep[sample, inner] = draws[sample, inner] >= severity
    new_values = torch.full_like(values, pad_id)
    new_mask = torch.zeros_like(mask)
    for sample in range(values.shape[0]):
        kept = values[sample, keep[sample]]
        new_values[sample, : kept.numel()] = kept
        new_mask[sample, : kept.numel()] = True
    return replace(inputs, values=new_values, mask=new_mask)


def token_shuffle(inputs: ModalityInput, severity: float, generator: torch.Generator) -> ModalityInput:
    """Token ids ``(B, L)``: permute a random fraction ``s`` of each sample's inner tokens."""
    values, mask = inputs.values.clone(), inputs.mask
    if mask is None:
        mask = torch.ones_like(values, dtype=torch.bool)
    for sample, inner in enumerate(_inner_positions(mask)):
        _permute_some(values, inputs.values, sample, inner, severity, generator)
    return replace(inputs, values=values)


def _permute_some(values: Tensor, source: Tensor, sample: int, positions: Tensor, severity: float,
                  generator: torch.Generator) -> None:
    """Permute a random fraction ``severity`` of ``positions`` of row ``sample``: ``values`` (in place)
    takes them from ``source`` in a random order."""
    order = positions[torch.randperm(positions.numel(), generator=generator).to(positions.device)]
    chosen = order[: round(severity * positions.numel())]
    if chosen.numel() > 1:
        shuffled = chosen[torch.randperm(chosen.numel(), generator=generator).to(positions.device)]
        values[sample, chosen] = source[sample, shuffled]


def _real_frames(inputs: ModalityInput) -> Tensor:
    """The ``(B, T)`` frame mask of clips ``(B, T, C, H, W)``, materialised."""
    if inputs.mask is not None:
        return inputs.mask
    return torch.ones(inputs.values.shape[:2], dtype=torch.bool, device=inputs.values.device)


def frame_drop(inputs: ModalityInput, severity: float, generator: torch.Generator) -> ModalityInput:
    """Clips ``(B, T, C, H, W)``: drop each real frame with probability ``s`` (keeping at least one)
    and move the rest to the front; the frame mask marks what is left."""
    mask = _real_frames(inputs)
    draws = torch.rand(mask.shape, generator=generator).to(mask.device)
    values, new_mask = torch.zeros_like(inputs.values), torch.zeros_like(mask)
    for sample in range(mask.shape[0]):
        real = torch.nonzero(mask[sample], as_tuple=False).flatten()
        kept = real[draws[sample, real] >= severity]
        if kept.numel() == 0 and real.numel():  # a clip never loses every frame
            kept = real[draws[sample, real].argmax().view(1)]
        values[sample, : kept.numel()] = inputs.values[sample, kept]
        new_mask[sample, : kept.numel()] = True
    return replace(inputs, values=values, mask=new_mask)


def temporal_shuffle(inputs: ModalityInput, severity: float, generator: torch.Generator) -> ModalityInput:
    """Clips ``(B, T, C, H, W)``: permute a random fraction ``s`` of each clip's real frames."""
    mask, values = _real_frames(inputs), inputs.values.clone()
    for sample in range(mask.shape[0]):
        _permute_some(values, inputs.values, sample, torch.nonzero(mask[sample], as_tuple=False).flatten(),
                      severity, generator)
    return replace(inputs, values=values)


CORRUPTIONS: dict[str, tuple[str, Corruption]] = {
    "gaussian_noise": ("image", gaussian_noise),
    "blur": ("image", blur),
    "occlusion": ("image", occlusion),
    "noise_snr": ("audio", noise_snr),
    "token_dropout": ("text", token_dropout),
    "token_shuffle": ("text", token_shuffle),
    "frame_drop": ("video", frame_drop),
    "temporal_shuffle": ("video", temporal_shuffle),
}


def corruptions_for(modality: str) -> list[str]:
    """Names of the corruptions defined for ``modality`` (empty for an unknown one)."""
    return [name for name, (target, _) in CORRUPTIONS.items() if target == modality]


def corrupt(name: str, inputs: ModalityInput, severity: float, generator: torch.Generator,
            **options: float) -> ModalityInput:
    """Apply corruption ``name`` at ``severity``; severity 0 returns ``inputs`` itself."""
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption {name!r}; available: {', '.join(CORRUPTIONS)}")
    if _check_severity(severity) == 0.0:
        return inputs
    return CORRUPTIONS[name][1](inputs, severity, generator, **options)

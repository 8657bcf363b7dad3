"""CLIP training step: polyfuse :class:`~polyfuse.models.CLIP` vs open_clip's own ``CLIP``.

Imported by ``scripts/bench_train.py`` (``--model clip``). Both models hold the same weights (polyfuse
loads the randomly initialised open_clip checkpoint saved to ``tmp`` with ``CLIP.from_open_clip``),
get the same batch (images and 0-padded captions ending in the end-of-text token) and one step of
forward + symmetric InfoNCE (open_clip's ``ClipLoss`` / polyfuse's ``ContrastiveLoss``) + backward +
AdamW with the same settings and each side's own weight-decay groups (open_clip's training-script rule;
polyfuse's ``clip_pretrain_avdigits`` recipe, ``training/param_groups.py``).

Sizes: ``small`` (ViT-B-32's config at width 256, 4 layers, 96x96 images, batch 32: CPU) and ``base``
(ViT-B-32 as open_clip defines it: 224x224 images, 77 text tokens; batch 32 on CPU, 128 on GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from benchtools import training_step

from polyfuse.losses import ContrastiveLoss
from polyfuse.models import CLIP

MODEL = "ViT-B-32"
REPO = Path(__file__).resolve().parents[1]
SIZES = {
    "small": dict(overrides=lambda cfg: dict(
        embed_dim=256, vision_cfg={**cfg["vision_cfg"], "width": 256, "layers": 4, "image_size": 96},
        text_cfg={**cfg["text_cfg"], "width": 256, "heads": 4, "layers": 4, "context_length": 32}), batch=32),
    "base": dict(overrides=lambda cfg: {}, batch=32),
}


def _batch(batch: int, image_size: int, context: int, vocab: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, image_size, image_size, generator=generator)
    ids = torch.randint(1, vocab - 2, (batch, context), generator=generator)
    lengths = torch.randint(5, context + 1, (batch,), generator=generator)
    positions = torch.arange(context)[None]
    ids = torch.where(positions == (lengths - 1)[:, None], torch.full_like(ids, vocab - 1), ids)  # end of text
    ids = ids.masked_fill(positions >= lengths[:, None], 0)
    return images.to(device), ids.to(device)


def _groups(model: torch.nn.Module, ours: bool) -> list[dict]:
    """Each side's weight-decay groups: polyfuse's from the ``clip_pretrain_avdigits`` recipe
    (``model.optimizer_groups``), open_clip's by its training script's rule (no decay where ``ndim < 2`` or
    the name holds ``bn`` / ``ln`` / ``bias`` / ``logit_scale``)."""
    if ours:
        from omegaconf import OmegaConf

        from polyfuse.training.param_groups import parameter_groups

        recipe = OmegaConf.load(REPO / "configs" / "experiment" / "clip_pretrain_avdigits.yaml")
        return parameter_groups(model, OmegaConf.to_container(recipe.model.optimizer_groups))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    excluded = [p.ndim < 2 or any(key in n for key in ("bn", "ln", "bias", "logit_scale")) for n, p in named]
    return [{"params": [p for (_, p), out in zip(named, excluded) if out], "weight_decay": 0.0},
            {"params": [p for (_, p), out in zip(named, excluded) if not out]}]


def _step(model: torch.nn.Module, loss_fn: torch.nn.Module, images: torch.Tensor, ids: torch.Tensor,
          ours: bool) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(_groups(model, ours), lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)
    return training_step(optimizer, lambda: loss_fn(*model(images, ids)[:3]))


def pairs(size: str, device: str, tmp: Path) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    """``{"clip <arch> <size>": (open_clip step, polyfuse step)}``."""
    import open_clip
    from safetensors.torch import save_file

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; valid: {', '.join(SIZES)}")
    preset = SIZES[size]
    overrides = preset["overrides"](open_clip.get_model_config(MODEL))
    torch.manual_seed(0)
    reference = open_clip.create_model(MODEL, **overrides).train()
    path = tmp / f"clip_{size}.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    ours = CLIP.from_open_clip(MODEL, path, **overrides).train()
    config = ours.open_clip_config()
    batch = preset["batch"] * (4 if torch.device(device).type == "cuda" and size == "base" else 1)
    images, ids = _batch(batch, config["vision_cfg"]["image_size"], config["text_cfg"]["context_length"],
                         config["text_cfg"]["vocab_size"], device)
    reference, ours = reference.to(device), ours.to(device)
    return {f"clip {MODEL} {size} (batch {batch})": (_step(reference, open_clip.loss.ClipLoss(), images, ids, False),
                                                     _step(ours, ContrastiveLoss(), images, ids, True))}

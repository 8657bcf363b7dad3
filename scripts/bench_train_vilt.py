"""ViLT-VQA training step: polyfuse :class:`~polyfuse.models.ViLT` vs Hugging Face ``ViltForQuestionAnswering``.

Imported by ``scripts/bench_train.py`` (``--model vilt``). Both models hold the same weights (polyfuse
loads the randomly initialised HF checkpoint saved to ``tmp``), get the same batch (padded questions,
soft-score targets) and an AdamW step with the same settings (ViLT's: lr 1e-4, betas 0.9 / 0.98, weight
decay 0.01 except on biases and norms, the classifier at 10x). Dropout is 0 on both sides so the two
steps compute the same thing.

Sizes: ``small`` (hidden 128, 4 layers, 192x192 images: CPU) and ``base`` (ViLT-B/32: hidden 768,
12 layers, 12 heads, 384x384 images, 3129 answers, 40 text tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from benchtools import training_step

from polyfuse.models import ViLT

REPO = Path(__file__).resolve().parents[1]

SIZES = {
    "small": dict(config=dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                              image_size=192, patch_size=32, num_labels=256), batch=16, text=16),
    "base": dict(config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                             image_size=384, patch_size=32, num_labels=3129), batch=8, text=40),
}


def _batch(size: dict, vocab: int, device: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    batch, length, image = size["batch"], size["text"], size["config"]["image_size"]
    ids = torch.randint(1, vocab, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):  # questions of different lengths, padded
        mask[row, length // 2 + row % (length // 2):] = 0
    labels = torch.zeros(batch, size["config"]["num_labels"])
    labels[torch.arange(batch), torch.randint(0, labels.shape[1], (batch,), generator=generator)] = 1.0
    pixels = torch.randn(batch, 3, image, image, generator=generator)
    return {k: v.to(device) for k, v in dict(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                                             labels=labels).items()}


def _groups(model: torch.nn.Module, ours: bool) -> list[dict]:
    """Each side's groups as ViLT's ``set_schedule`` builds them: no weight decay on biases and norm weights,
    the VQA classifier at 10x the LR. polyfuse: ``model.optimizer_groups`` of ``model=vilt_hf`` (its head
    prefix without the training module's ``model.``); HF: the same rule on HF's names."""
    if ours:
        from omegaconf import OmegaConf

        from polyfuse.training.param_groups import parameter_groups

        settings = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "model" / "vilt_hf.yaml").optimizer_groups)
        settings["head_prefixes"] = [prefix.removeprefix("model.") for prefix in settings["head_prefixes"]]
        return parameter_groups(model, settings)
    groups: dict[tuple[bool, bool], dict] = {}
    for name, param in model.named_parameters():
        no_decay, head = name.endswith("bias") or "norm" in name.lower(), name.startswith("classifier.")
        group = groups.setdefault((no_decay, head), {"params": [], "lr_scale": 10.0 if head else 1.0})
        if no_decay:
            group["weight_decay"] = 0.0
        group["params"].append(param)
    return list(groups.values())


def _step(model: torch.nn.Module, batch: dict[str, torch.Tensor], ours: bool) -> Callable[[], None]:
    from polyfuse.training.param_groups import apply_lr_scales

    optimizer = apply_lr_scales(torch.optim.AdamW(_groups(model, ours), lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01))
    call = getattr(model, "hf_forward", model)  # polyfuse ViLT: HF's call is hf_forward
    return training_step(optimizer, lambda: call(**batch).loss)


def pairs(size: str, device: str, tmp: Path) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    """``{"vilt-vqa <size>": (HF step, polyfuse step)}``."""
    from transformers import ViltConfig, ViltForQuestionAnswering

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; valid: {', '.join(SIZES)}")
    preset = SIZES[size]
    torch.manual_seed(0)
    config = ViltConfig(**preset["config"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    reference = ViltForQuestionAnswering(config)
    path = tmp / f"vilt_vqa_{size}"
    reference.save_pretrained(path)
    ours = ViLT.from_hf(path).to(device).train()
    reference = reference.to(device).train()
    batch = _batch(preset, config.vocab_size, device)
    return {f"vilt-vqa {size}": (_step(reference, batch, False), _step(ours, batch, True))}

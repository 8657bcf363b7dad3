"""ViLT-VQA training step: polyfuse :class:`~polyfuse.models.ViLT` vs Hugging Face ``ViltForQuestionAnswering``.

Imported by ``scripts/bench_train.py`` (``--model vilt``). Both models hold the same weights (polyfuse
loads the randomly initialised HF checkpoint saved to ``tmp``), get the same batch (padded questions,
soft-score targets) and an AdamW step with the same settings. Dropout is 0 on both sides so the two
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


def _step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
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
    return {f"vilt-vqa {size}": (_step(reference, batch), _step(ours, batch))}

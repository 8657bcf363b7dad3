"""MultimodalLM speed, side by side in one process (CPU by default): generation with vs without the KV
cache, and a training step of stage 1 (connector only) vs stage 2 (connector + LoRA), next to Hugging
Face's ``LlavaForConditionalGeneration`` with the same LoRA adapters on the same batch.

The models are a tiny-but-not-trivial random LLaVA (CLIP ViT: width 128, 4 layers, 64x64 images in
8x8 patches -> 64 image tokens; Llama: width 256, 4 layers, 8 heads / 4 KV heads) and the
:class:`~polyfuse.models.MultimodalLM` converted from it (same weights). Each measure is a ratio of
interleaved medians (:func:`benchtools.interleaved_medians`), meaningful on a noisy machine.

Usage: ``python scripts/bench_mllm.py [--batch 4] [--new-tokens 16] [--repeats 5] [--warmup 1]``.
"""

from __future__ import annotations

import argparse
import json

import torch
from benchtools import interleaved_medians, training_step

from polyfuse.batch import Batch, ModalityInput
from polyfuse.cli.config import repo_root
from polyfuse.models.chat import load_chat_tokenizer
from polyfuse.models.llava_convert import multimodal_lm_from_hf_llava

LORA = {"r": 8, "alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
QUESTION = "<image>\nwhat digit is shown ? is it even ? what is the digit plus two ?"


def tiny_llava(tokenizer):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                              image_size=64, patch_size=8, num_channels=3)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config)


def batch_of(size: int) -> Batch:
    conversations = [[{"from": "human", "value": QUESTION}, {"from": "gpt", "value": "seven"},
                      {"from": "human", "value": "is it odd ?" + " is it odd ?" * (row % 3)},
                      {"from": "gpt", "value": "yes"}] for row in range(size)]
    pixels = torch.randn(size, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return Batch(inputs={"image": ModalityInput(pixels)}, extras={"conversations": conversations})


def hf_inputs(model, batch: Batch, image_tokens: int) -> dict[str, torch.Tensor]:
    """HF LLaVA's right-padded inputs for the same conversations: ``<image>`` expanded, answer-only labels."""
    ids, labels = model.tokenize(batch.extras["conversations"])
    image_id = model.placeholder_ids["image"]
    rows = []
    for row, label in zip(ids, labels):
        at = row.index(image_id)
        rows.append((row[:at] + [image_id] * image_tokens + row[at + 1:],
                     label[:at] + [-100] * image_tokens + label[at + 1:]))
    longest = max(len(r) for r, _ in rows)
    pad = model.tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (longest - len(r)) for r, _ in rows])
    target = torch.tensor([lab + [-100] * (longest - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r, _ in rows])
    return {"input_ids": input_ids, "attention_mask": mask, "labels": target, "pixel_values": batch.inputs["image"].values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    import peft

    tokenizer = load_chat_tokenizer(repo_root() / "data" / "avdigits" / "tokenizer.json")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    batch = batch_of(args.batch)
    results: dict[str, float] = {"threads": torch.get_num_threads(), "batch": args.batch}

    # generation: the same greedy decoding of new_tokens tokens, with and without the KV cache
    model = multimodal_lm_from_hf_llava(tiny_llava(tokenizer), tokenizer).eval()
    ids, _ = model.tokenize(batch.extras["conversations"], generation=True)
    with torch.no_grad():
        features = model.encode(batch)
    n = args.new_tokens
    generate = {f"generate_{kind}": (lambda cache=cache: model.generate_ids(ids, features, n, min_new_tokens=n,
                                                                             use_cache=cache))
                for kind, cache in (("kv_cache", True), ("no_cache", False))}
    times = interleaved_medians(generate, args.repeats, args.warmup)
    for name, seconds in times.items():
        results[f"{name}_tokens_per_s"] = args.batch * n / seconds
    results["kv_cache_speedup"] = times["generate_no_cache"] / times["generate_kv_cache"]

    # training: stage 1 (connector) vs stage 2 (connector + LoRA) vs HF LLaVA with the same LoRA
    steps = {}
    for stage in (1, 2):
        built = multimodal_lm_from_hf_llava(tiny_llava(tokenizer), tokenizer, stage=stage,
                                            lora=LORA if stage == 2 else None).train()
        optimizer = torch.optim.AdamW([p for p in built.parameters() if p.requires_grad], lr=1e-4)
        steps[f"stage{stage}"] = training_step(optimizer, lambda built=built: built(batch).outputs.loss)
    hf = tiny_llava(tokenizer)
    hf.requires_grad_(False)
    hf = peft.get_peft_model(hf, peft.LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0,
                                                 target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"))
    hf.base_model.model.model.multi_modal_projector.requires_grad_(True)
    hf.train()
    inputs = hf_inputs(model, batch, image_tokens=64)
    with torch.no_grad():  # the same computation: same loss before any step (LoRA B starts at zero)
        ours, theirs = float(built(batch).outputs.loss), float(hf(**inputs).loss)
    if abs(ours - theirs) > 1e-4 * max(1.0, abs(theirs)):
        raise RuntimeError(f"polyfuse and HF LLaVA losses differ ({ours} vs {theirs}): the comparison would be unfair")
    optimizer = torch.optim.AdamW([p for p in hf.parameters() if p.requires_grad], lr=1e-4)
    steps["hf_llava_stage2"] = training_step(optimizer, lambda: hf(**inputs).loss)
    times = interleaved_medians(steps, args.repeats, args.warmup)
    results |= {f"train_{name}_s": seconds for name, seconds in times.items()}
    results["stage2_over_stage1"] = times["stage2"] / times["stage1"]
    results["stage2_polyfuse_over_hf"] = times["stage2"] / times["hf_llava_stage2"]
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()

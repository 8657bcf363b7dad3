"""MultimodalLM built from a Hugging Face ``LlavaForConditionalGeneration`` gives HF's logits (tiny random models)."""

from __future__ import annotations

import pytest
import torch

from polyfuse.batch import Batch, ModalityInput
from polyfuse.encoders import ViTEncoder
from polyfuse.models.chat import load_chat_tokenizer
from polyfuse.models.llava_convert import multimodal_lm_from_hf_llava

from .lm_cases import TOKENIZER

pytestmark = pytest.mark.usefixtures("single_thread")

CONVERSATIONS = [
    [{"from": "human", "value": "<image>\nwhat digit is shown ?"}, {"from": "gpt", "value": "seven"},
     {"from": "human", "value": "is it even ?"}, {"from": "gpt", "value": "no"}],
    [{"from": "human", "value": "is the digit greater than two ? <image>"}, {"from": "gpt", "value": "yes"}],
]


def tiny_llava(tokenizer, feature_layer, strategy: str):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                              image_size=32, patch_size=8, num_channels=3)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=feature_layer, vision_feature_select_strategy=strategy)
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config).eval()


@pytest.mark.parametrize("feature_layer,strategy,vision", [(-2, "default", "polyfuse"), (-1, "full", "polyfuse"),
                                                           (1, "default", "polyfuse"), (-2, "default", "hf"),
                                                           ([-3, -2], "default", "polyfuse")])
def test_logits_equal_hf_llava(feature_layer, strategy, vision):
    tokenizer = load_chat_tokenizer(TOKENIZER)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    llava = tiny_llava(tokenizer, feature_layer, strategy)
    model = multimodal_lm_from_hf_llava(llava, tokenizer, vision=vision).eval()
    image_encoder = model.encoders["image"]
    own_vit = isinstance(getattr(image_encoder, "encoder", image_encoder), ViTEncoder)
    assert own_vit == (vision == "polyfuse" and isinstance(feature_layer, int))
    if own_vit:  # cut at the feature layer: the blocks after it are not even built
        depth = feature_layer if feature_layer >= 0 else 3 + 1 + feature_layer
        assert len(getattr(image_encoder, "encoder", image_encoder).blocks) == depth
    image_id = model.placeholder_ids["image"]
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = Batch(inputs={"image": ModalityInput(pixels)}, extras={"conversations": CONVERSATIONS})
    ids, _ = model.tokenize(CONVERSATIONS)
    n_image = 16 + (strategy == "full")  # (32 / 8)^2 patches (+ [CLS])
    with torch.no_grad():
        ours = model(batch).outputs.logits
        for index, row in enumerate(ids):
            at = row.index(image_id)
            expanded = row[:at] + [image_id] * n_image + row[at + 1:]  # what HF's processor feeds
            theirs = llava(input_ids=torch.tensor([expanded]), pixel_values=pixels[index:index + 1]).logits[0]
            torch.testing.assert_close(ours[index, : len(expanded)], theirs, atol=1e-5, rtol=1e-5)


def hf_answer(llava, tokenizer, row: list[int], pixels: torch.Tensor, n_image: int, **settings) -> list[int]:
    """HF LLaVA's new tokens for one prompt (``<image>`` expanded, as its processor does), cut after EOS."""
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    at = row.index(image_id)
    expanded = row[:at] + [image_id] * n_image + row[at + 1:]
    out = llava.generate(input_ids=torch.tensor([expanded]), attention_mask=torch.ones(1, len(expanded), dtype=torch.long),
                         pixel_values=pixels, suppress_tokens=[image_id], do_sample=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **settings)
    new = out[0, len(expanded):].tolist()
    return new[: new.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in new else new


def test_batched_beam_search_equals_hf_llava():
    tokenizer = load_chat_tokenizer(TOKENIZER)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    llava = tiny_llava(tokenizer, -2, "default")
    model = multimodal_lm_from_hf_llava(llava, tokenizer).eval()
    prompts = CONVERSATIONS + [[{"from": "human", "value": "<image>\nis it odd ?"}]]
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    batch = Batch(inputs={"image": ModalityInput(pixels)}, extras={"conversations": prompts})
    ids, _ = model.tokenize(prompts, generation=True)
    features = model.encode(batch)
    differs = False
    with torch.no_grad():
        for beams in (1, 3):
            ours = model.generate_ids(ids, features, max_new_tokens=6, num_beams=beams)  # one left-padded batch
            for index, row in enumerate(ids):
                theirs = hf_answer(llava, tokenizer, row, pixels[index:index + 1], 16, max_new_tokens=6, num_beams=beams)
                assert ours[index] == theirs, f"prompt {index}, {beams} beam(s)"
                if beams == 3:
                    differs |= theirs != hf_answer(llava, tokenizer, row, pixels[index:index + 1], 16, max_new_tokens=6)
    assert differs, "beam search gave the greedy answer for every prompt: the comparison could not tell them apart"
    assert model.generate(batch, max_new_tokens=6, num_beams=3) == \
        [tokenizer.decode(r, skip_special_tokens=True).strip() for r in model.generate_ids(ids, features, 6, num_beams=3)]

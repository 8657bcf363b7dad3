"""MultimodalLM -> Hugging Face LlavaForConditionalGeneration: HF -> polyfuse -> HF gives HF's logits back."""

from __future__ import annotations

import pytest
import torch

from polyfuse.batch import Batch, ModalityInput
from polyfuse.fusion import LinearConnector, MLPConnector, PerceiverResamplerConnector
from polyfuse.models import MultimodalLM
from polyfuse.models.chat import load_chat_tokenizer
from polyfuse.models.llava_convert import multimodal_lm_from_hf_llava
from polyfuse.models.llava_export import hf_llava_from_multimodal_lm, save_hf_llava

from .lm_cases import TOKENIZER, save_tiny_lm, tiny_encoders
from .test_llava_parity import CONVERSATIONS, tiny_llava

pytestmark = pytest.mark.usefixtures("single_thread")
PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def chat_tokenizer():
    tokenizer = load_chat_tokenizer(TOKENIZER)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def hf_logits(llava, model: MultimodalLM, n_image: int) -> list[torch.Tensor]:
    """HF's logits per conversation, ``<image>`` expanded to ``n_image`` tokens as its processor does."""
    image_id = model.placeholder_ids["image"]
    out = []
    for index, row in enumerate(model.tokenize(CONVERSATIONS)[0]):
        at = row.index(image_id)
        expanded = row[:at] + [image_id] * n_image + row[at + 1:]
        with torch.no_grad():
            out.append(llava(input_ids=torch.tensor([expanded]), pixel_values=PIXELS[index:index + 1]).logits[0])
    return out


def own_logits(model: MultimodalLM) -> torch.Tensor:
    batch = Batch(inputs={"image": ModalityInput(PIXELS)}, extras={"conversations": CONVERSATIONS})
    with torch.no_grad():
        return model.eval()(batch).outputs.logits


def reload(model: MultimodalLM, directory):
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    save_hf_llava(model, directory)
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    assert tokenizer.convert_tokens_to_ids("<image>") == model.placeholder_ids["image"]
    return LlavaForConditionalGeneration.from_pretrained(str(directory), local_files_only=True).eval()


@pytest.mark.parametrize("feature_layer,strategy,vision", [(-2, "default", "polyfuse"), (-1, "full", "polyfuse"),
                                                           (-2, "default", "hf")])
def test_round_trip_gives_hf_logits_back(tmp_path, feature_layer, strategy, vision):
    tokenizer = chat_tokenizer()
    original = tiny_llava(tokenizer, feature_layer, strategy)
    model = multimodal_lm_from_hf_llava(original, tokenizer, vision=vision)
    back = reload(model, tmp_path / "llava")
    assert back.config.vision_feature_select_strategy == strategy
    n_image = 16 + (strategy == "full")
    for ours, theirs in zip(hf_logits(back, model, n_image), hf_logits(original, model, n_image)):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_lora_is_merged_into_the_export_and_kept_on_the_model(tmp_path):
    pytest.importorskip("peft", reason="LoRA needs the `llm` extra (peft)")
    tokenizer = chat_tokenizer()
    model = multimodal_lm_from_hf_llava(tiny_llava(tokenizer, -2, "default"), tokenizer, stage=2, lora={"r": 4})
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.lm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    adapted = own_logits(model)
    back = reload(model, tmp_path / "llava")
    assert any("lora_" in name for name, _ in model.named_parameters())  # merged into a copy
    for index, theirs in enumerate(hf_logits(back, model, 16)):
        torch.testing.assert_close(adapted[index, : theirs.shape[0]], theirs, atol=1e-5, rtol=1e-5)


def test_linear_connector_exports_as_a_two_layer_projector():
    tokenizer = chat_tokenizer()
    converted = multimodal_lm_from_hf_llava(tiny_llava(tokenizer, -2, "default"), tokenizer)
    torch.manual_seed(2)
    model = MultimodalLM(converted.lm, {"image": converted.encoders["image"]}, LinearConnector, tokenizer=tokenizer)
    llava = hf_llava_from_multimodal_lm(model).eval()
    assert llava.config.projector_hidden_act == "linear"
    ours = own_logits(model)
    for index, theirs in enumerate(hf_logits(llava, model, 16)):
        torch.testing.assert_close(ours[index, : theirs.shape[0]], theirs, atol=1e-5, rtol=1e-5)


def test_what_llava_cannot_hold_is_refused(tmp_path):
    lm_dir = save_tiny_lm("llama", tmp_path / "lm")
    with pytest.raises(ValueError, match=r"LLaVA takes images only; this model has modalities \['image', 'audio'\]"):
        hf_llava_from_multimodal_lm(MultimodalLM(str(lm_dir), tiny_encoders(), LinearConnector))
    image_only = {"image": tiny_encoders()["image"]}
    with pytest.raises(ValueError, match="not in CLIP's layout"):  # polyfuse's default ViT: final norm, patch bias
        hf_llava_from_multimodal_lm(MultimodalLM(str(lm_dir), image_only, LinearConnector))
    resampler = lambda dims, out_dim: PerceiverResamplerConnector(dims, out_dim, latents=4, heads=2, depth=1)  # noqa: E731
    tokenizer = chat_tokenizer()
    converted = multimodal_lm_from_hf_llava(tiny_llava(tokenizer, -2, "default"), tokenizer)
    with pytest.raises(ValueError, match="PerceiverResamplerConnector; LLaVA export needs an MLPConnector"):
        hf_llava_from_multimodal_lm(MultimodalLM(converted.lm, {"image": converted.encoders["image"]}, resampler,
                                                 tokenizer=tokenizer))


@pytest.mark.parametrize("kind", ["gpt2", "qwen2"])
def test_other_language_models_export(tmp_path, kind):
    tokenizer = chat_tokenizer()
    vit = multimodal_lm_from_hf_llava(tiny_llava(tokenizer, -2, "default"), tokenizer).encoders["image"]
    torch.manual_seed(3)
    model = MultimodalLM(str(save_tiny_lm(kind, tmp_path / kind)), {"image": vit}, MLPConnector, tokenizer=tokenizer)
    back = reload(model, tmp_path / "llava")  # GPT-2's tied embeddings: written out untied
    assert back.config.text_config.model_type == kind
    ours = own_logits(model)
    for index, theirs in enumerate(hf_logits(back, model, 16)):
        torch.testing.assert_close(ours[index, : theirs.shape[0]], theirs, atol=1e-5, rtol=1e-5)

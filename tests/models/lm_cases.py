"""Tiny randomly initialised causal LMs (Llama, Qwen2, GPT-2 style) saved to a directory, and tiny batches."""

from __future__ import annotations

from pathlib import Path

import torch

from polyfuse.batch import Batch, ModalityInput
from polyfuse.cli.config import repo_root
from polyfuse.encoders import AudioCNNEncoder, ViTEncoder
from polyfuse.models.chat import load_chat_tokenizer

TOKENIZER = repo_root() / "data" / "avdigits" / "tokenizer.json"
HIDDEN = 32

LM_CONFIGS = {
    "llama": {"model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256},
    "qwen2": {"model_type": "qwen2", "hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256},
    "gpt2": {"model_type": "gpt2", "n_embd": HIDDEN, "n_layer": 2, "n_head": 4, "n_positions": 256,
             "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
}


def save_tiny_lm(kind: str, directory: Path, seed: int = 0) -> Path:
    """A random ``kind`` LM + AV-digits' word-level tokenizer (with <s>, </s>), as ``save_pretrained`` does."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = load_chat_tokenizer(TOKENIZER)
    options = dict(LM_CONFIGS[kind])
    config = AutoConfig.for_model(options.pop("model_type"), vocab_size=len(tokenizer),
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, **options)
    torch.manual_seed(seed)
    lm = AutoModelForCausalLM.from_config(config)
    lm.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def tiny_encoders(seed: int = 0) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    return {"image": ViTEncoder(dim=16, depth=1, heads=2, mlp_ratio=2.0),
            "audio": AudioCNNEncoder(channels=[4, 8, 8], convs_per_block=1)}


CONVERSATION = [{"from": "human", "value": "<image>\nwhat digit is shown ?"}, {"from": "gpt", "value": "seven"},
                {"from": "human", "value": "<audio>\nis the digit even ?"}, {"from": "gpt", "value": "no"}]
SHORT = [{"from": "human", "value": "what is the digit plus two ?\n<image>"}, {"from": "gpt", "value": "nine"}]


def tiny_batch(image_present: list[bool], audio_present: list[bool], conversations: list, seed: int = 0,
               audio_lengths: list[int] | None = None) -> Batch:
    """Images ``(B, 1, 32, 32)``, waveforms of ``audio_lengths`` samples (8 kHz), the conversations."""
    generator = torch.Generator().manual_seed(seed)
    size = len(conversations)
    lengths = audio_lengths or [4000] * size
    audio = torch.randn(size, max(lengths), generator=generator)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return Batch(inputs={
        "image": ModalityInput(torch.randn(size, 1, 32, 32, generator=generator),
                               present=torch.tensor(image_present)),
        "audio": ModalityInput(audio * mask, mask=mask, present=torch.tensor(audio_present))},
        ids=[str(i) for i in range(size)], extras={"conversations": conversations})

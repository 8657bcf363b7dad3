"""MultimodalLM stage 2: LoRA adapters (peft) only then, saved alone, and merged without changing the logits."""

from __future__ import annotations

import pytest
import torch

from polyfuse.fusion import MLPConnector
from polyfuse.models import MultimodalLM

from .lm_cases import CONVERSATION, save_tiny_lm, tiny_batch, tiny_encoders

pytest.importorskip("peft", reason="LoRA needs the `llm` extra (peft)")
pytestmark = pytest.mark.usefixtures("single_thread")


def build(lm_dir, stage: int, **options) -> MultimodalLM:
    torch.manual_seed(0)
    return MultimodalLM(str(lm_dir), tiny_encoders(), MLPConnector, stage=stage, **options)


def randomise_lora(model: MultimodalLM) -> None:
    """peft starts B at zero (the adapter is a no-op); give every adapter weight a value."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.lm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_lora_only_in_stage2_saved_alone_and_merged(tmp_path, kind):
    lm_dir = save_tiny_lm(kind, tmp_path / "lm")
    stage1 = build(lm_dir, 1)
    assert not any("lora_" in name for name, _ in stage1.named_parameters())
    model = build(lm_dir, 2, lora={"r": 4, "alpha": 8})
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    lora = {name for name in trainable if "lora_" in name}
    assert lora and trainable == lora | {f"connector.{n}" for n, _ in model.connector.named_parameters()}
    randomise_lora(model)
    batch = tiny_batch([True], [True], [CONVERSATION])
    model.train()
    model(batch).outputs.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in lora)
    model.eval()
    with torch.no_grad():
        adapted = model(batch).outputs.logits
        plain = build(lm_dir, 1).eval()
        plain.connector.load_state_dict(model.connector.state_dict())
        assert not torch.allclose(plain(batch).outputs.logits, adapted, atol=1e-4)
    # saved alone: only adapter weights, small next to the LM
    saved = model.save_lora(tmp_path / "adapter")
    files = {p.name for p in saved.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
    from safetensors.torch import load_file

    assert all("lora_" in key for key in load_file(str(saved / "adapter_model.safetensors")))
    # loaded onto a plain model: same logits; merged: same logits and no peft wrapper left
    plain.load_lora(saved)
    with torch.no_grad():
        torch.testing.assert_close(plain(batch).outputs.logits, adapted, atol=1e-5, rtol=1e-5)
        model.merge_lora()
        assert not any("lora_" in name for name, _ in model.named_parameters())
        torch.testing.assert_close(model(batch).outputs.logits, adapted, atol=1e-5, rtol=1e-5)


def test_missing_peft_names_the_extra(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # an import of peft now fails, installed or not
    from polyfuse.models.lora import require_peft

    with pytest.raises(ImportError, match=r"polyfuse\[llm\]"):
        require_peft()

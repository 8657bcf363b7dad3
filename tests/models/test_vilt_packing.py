"""ViLT with ``packing=True`` (one packed sequence of real text tokens and image patches per sample)
equals the padded model: outputs, gradients, absent images, and two training steps of the AV-digits
ViLT experiment (docs/packing.md)."""

from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import open_dict

from polyfuse.attention import using_backend
from polyfuse.batch import Batch, ModalityInput
from polyfuse.heads.base import valid_rows_loss
from polyfuse.models import ViLT

VOCAB, TOL = 50, dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(autouse=True)
def sdpa_backend():
    with using_backend("sdpa"):
        yield


def pair(task: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    options = dict(num_labels=5, vocab_size=VOCAB, max_text_length=16, modality_type_vocab_size=3, dim=32, depth=2,
                   heads=4, mlp_hidden=64, image_size=32, patch_size=8)
    torch.manual_seed(0)
    padded = ViLT(task=task, **options).eval()
    packed = ViLT(task=task, packing=True, **options).eval()
    packed.load_state_dict(padded.state_dict())
    assert packed.fusion.packing and not padded.fusion.packing
    return padded, packed


def hf_inputs(task: str = "vqa") -> dict[str, torch.Tensor]:
    """Padded text and a pixel mask padding sample 1's image on the right and sample 2's below
    (NLVR2: two such images per sample)."""
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, VOCAB, (3, 9), generator=generator)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:], mask[2, 2:] = 0, 0
    images = (2,) if task == "nlvr2" else ()
    pixel_mask = torch.ones(3, *images, 32, 48, dtype=torch.long)
    pixel_mask[1, ..., 24:] = 0
    pixel_mask[2, ..., 16:, :] = 0
    return dict(input_ids=ids, attention_mask=mask, pixel_mask=pixel_mask,
                pixel_values=torch.randn(3, *images, 3, 32, 48, generator=generator))


def assert_same_gradients(padded: torch.nn.Module, packed: torch.nn.Module) -> None:
    for (name, a), (_, b) in zip(padded.named_parameters(), packed.named_parameters()):
        grad_a = torch.zeros_like(a) if a.grad is None else a.grad
        grad_b = torch.zeros_like(b) if b.grad is None else b.grad
        torch.testing.assert_close(grad_b, grad_a, **TOL, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("task", ["model", "vqa", "nlvr2"])
def test_hf_call_packed_equals_padded(task):
    padded, packed = pair(task)
    batch = hf_inputs(task)
    torch.manual_seed(11)  # the same patch-sampling draws on both sides
    expected = padded.hf_forward(**batch)
    torch.manual_seed(11)
    actual = packed.hf_forward(**batch)
    torch.testing.assert_close(actual.pooler_output, expected.pooler_output, **TOL)
    if task != "nlvr2":  # NLVR2 fuses each image in its own pass and returns no tokens
        torch.testing.assert_close(actual.last_hidden_state, expected.last_hidden_state, **TOL)
    if task != "model":
        torch.testing.assert_close(actual.logits, expected.logits, **TOL)
    for output in (expected, actual):
        (output.pooler_output.pow(2).mean() + (output.last_hidden_state.sin().mean() if task != "nlvr2" else 0)
         + (0 if output.logits is None else output.logits.mean())).backward()
    assert_same_gradients(padded, packed)


def test_batch_path_with_absent_images_packed_equals_padded():
    padded, packed = pair("vqa")
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(1, VOCAB, (4, 7), generator=generator)
    text_mask = torch.arange(7)[None, :] < torch.tensor([7, 3, 5, 1])[:, None]
    images = torch.randn(4, 3, 32, 32, generator=generator)
    images[1] = float("nan")  # an absent image's pixels are garbage that must not reach anything
    present = torch.tensor([True, False, True, True])
    batch = Batch({"text": ModalityInput(ids, text_mask), "image": ModalityInput(images, present=present)})
    torch.manual_seed(11)  # the same patch-sampling draws on both sides
    expected = padded(batch)
    torch.manual_seed(11)
    actual = packed(batch)
    assert torch.isfinite(actual.outputs).all()
    torch.testing.assert_close(actual.outputs, expected.outputs, **TOL)
    torch.testing.assert_close(actual.fused.tokens, expected.fused.tokens, **TOL)
    expected.outputs.sum().backward()
    actual.outputs.sum().backward()
    assert_same_gradients(padded, packed)


def two_training_losses(compose_train, packing: bool) -> list[float]:
    base = compose_train(["experiment=vilt_vqa_avdigits"])
    # the one switch: model.packing once the training module declares it, else ViLT's own argument
    switch = "model.packing" if "packing" in base.model else "model.model.packing"
    cfg = compose_train(["experiment=vilt_vqa_avdigits", f"{switch}={str(packing).lower()}", "data.batch_size=16",
                         "data.num_workers=0", "model.model.config.dropout=0.0"])
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    torch.manual_seed(0)
    with open_dict(cfg):
        cfg.model.model.config.depth = 2
    module = hydra.utils.instantiate(cfg.model)
    assert module.model.fusion.packing is packing
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    losses = []
    for step, batch in zip(range(2), datamodule.train_dataloader()):
        assert not batch.inputs["text"].mask.all()  # questions of several lengths: the packed path runs
        loss = valid_rows_loss(module.model.head, module(batch).outputs, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.slow
def test_model_packing_switch_gives_the_same_two_training_steps(compose_train):
    padded, packed = two_training_losses(compose_train, False), two_training_losses(compose_train, True)
    assert len(padded) == 2
    assert padded == pytest.approx(packed, abs=1e-5)

"""Memory/speed knobs change memory or speed, never the numbers."""

from __future__ import annotations

import hydra
import pytest
import torch

from polyfuse.attention import get_default_backend, set_default_backend
from polyfuse.attention.auto import clear_auto_cache
from polyfuse.encoders import AudioCNNEncoder, ViTEncoder
from polyfuse.training.performance import PerformanceKnobs, enable_grad_checkpointing, select_modules

CHECKPOINTED = ["encoders.image", "encoders.text", "fusion.blocks.*"]


@pytest.fixture
def model_and_batch(compose_train):
    cfg = compose_train(["model/fusion=early", "data.modalities=[image,text]", "data.batch_size=8"])

    def make():
        torch.manual_seed(0)
        return hydra.utils.instantiate(cfg.model)

    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    return make, next(iter(datamodule.train_dataloader()))


def _loss_grads_and_saved_bytes(module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    saved = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    module.train()
    torch.manual_seed(1)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _, loss = module._step(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}, sum(saved)


def test_grad_checkpointing_keeps_gradients_and_saves_activation_memory(model_and_batch):
    make, batch = model_and_batch
    loss, grads, saved = _loss_grads_and_saved_bytes(make(), batch)
    module = make()
    changed = enable_grad_checkpointing(module.model, CHECKPOINTED)
    assert {"encoders.image", "encoders.text", "fusion.blocks.0"} <= set(changed)
    assert module.model.encoders.image.grad_checkpointing           # the encoder's per-block switches
    assert all(block.grad_checkpointing for block in module.model.fusion.blocks)
    assert not any("forward" in vars(m) for m in module.modules())  # declarative: no forward replaced
    ck_loss, ck_grads, ck_saved = _loss_grads_and_saved_bytes(module, batch)
    torch.testing.assert_close(ck_loss, loss)
    assert ck_grads.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(ck_grads[name], grads[name], msg=name)
    # the two encoders alone save ~26%; with the fusion blocks too over 40%
    assert ck_saved < 0.6 * saved, (ck_saved, saved)


def test_patterns_match_one_level_and_unknown_names_are_reported(model_and_batch):
    module = model_and_batch[0]().model
    assert all(name.count(".") == 2 for name in select_modules(module, ["fusion.blocks.*"]))
    with pytest.raises(KeyError, match=r"'fusion\.block\.\*'.*top-level modules: \[.*'encoders'"):
        select_modules(module, ["fusion.block.*"])


def test_channels_last_converts_conv_weights_and_keeps_outputs():
    encoder = AudioCNNEncoder(channels=[8, 16], convs_per_block=1).eval()
    waveform = torch.randn(2, 4000)
    expected = encoder(waveform).tokens
    PerformanceKnobs(channels_last=True).apply(encoder)
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    torch.testing.assert_close(encoder(waveform).tokens, expected, rtol=1e-4, atol=1e-5)


def test_compile_in_place_keeps_parameter_names_and_outputs(model_and_batch):
    make, batch = model_and_batch
    module = make().eval()
    keys = list(module.state_dict())
    with torch.no_grad():
        expected = module(batch).outputs
    PerformanceKnobs(compile=["fusion"], compile_options={"backend": "eager"}).apply(module.model)
    assert list(module.state_dict()) == keys                       # checkpoints stay loadable
    with torch.no_grad():
        torch.testing.assert_close(module(batch).outputs, expected)


def test_checkpointing_with_a_cold_auto_attention_cache():
    """Checkpointing works while ``auto`` still has to measure: its trial calls must not be packed by
    the checkpoint's saved-tensor hooks (the recomputation, which finds the cached choice, would save
    fewer tensors: CheckpointError)."""
    previous = get_default_backend()
    set_default_backend("auto")
    clear_auto_cache()
    try:
        torch.manual_seed(0)
        encoder = ViTEncoder(image_size=16, patch_size=4, in_chans=1, dim=32, depth=2, heads=2, grad_checkpointing=True)
        images = torch.randn(4, 1, 16, 16)
        encoder(images).tokens.sum().backward()
        checkpointed = [p.grad.clone() for p in encoder.parameters()]
        encoder.zero_grad()
        encoder.grad_checkpointing = False
        set_default_backend("reference")
        encoder(images).tokens.sum().backward()
        for got, expected in zip(checkpointed, [p.grad for p in encoder.parameters()]):
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    finally:
        set_default_backend(previous)


def test_compile_waits_for_the_first_eager_batch_and_auto_choices_are_agreed_first(monkeypatch):
    """``auto`` attention probes and times eagerly on the first batch, then the model is compiled: the
    choices exist before tracing (and DDP ranks exchange them: ``prepare`` calls ``sync_choices``)."""
    from types import SimpleNamespace

    from lightning.pytorch import LightningModule
    from lightning.pytorch.trainer.states import TrainerFn

    import polyfuse.training.performance as performance

    events = []
    monkeypatch.setattr(performance.auto_attention, "prepare", lambda: events.append("prepare"))
    monkeypatch.setattr(performance.auto_attention, "sync_choices", lambda: events.append("sync"))
    pl_module = LightningModule()
    pl_module.model = torch.nn.Linear(2, 2)
    knobs = PerformanceKnobs(compile=True, compile_options={"backend": "eager"})
    trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING))
    knobs.setup(trainer, pl_module, "fit")
    knobs.on_validation_batch_end(trainer, pl_module, None, None, 0)  # the sanity check: still eager
    assert pl_module.model._compiled_call_impl is None and events == []
    knobs.on_train_batch_end(trainer, pl_module, None, None, 0)
    assert pl_module.model._compiled_call_impl is not None and events == ["prepare"]
    knobs.on_train_batch_end(trainer, pl_module, None, None, 1)
    knobs.on_train_epoch_end(trainer, pl_module)
    assert events == ["prepare", "sync"]
    evaluating = PerformanceKnobs(compile=True, compile_options={"backend": "eager"})
    pl_module.model = torch.nn.Linear(2, 2)
    trainer.state.fn = TrainerFn.TESTING
    evaluating.setup(trainer, pl_module, "test")
    evaluating.on_test_batch_end(trainer, pl_module, None, None, 0)
    assert pl_module.model._compiled_call_impl is not None

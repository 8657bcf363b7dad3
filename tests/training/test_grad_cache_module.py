"""``model.objective.grad_cache`` in PolyfuseLitModule: the training step's loss and gradients equal the
plain step's, and one optimiser step under Lightning equals it with gradient accumulation and bf16 autocast."""

from __future__ import annotations

from functools import partial

import lightning as L
from lightning.pytorch.plugins import MixedPrecision
import pytest
import torch
from torch import nn

from polyfuse.batch import Batch, Encoded, ModalityInput
from polyfuse.heads.contrastive import ContrastiveHead
from polyfuse.training.module import PolyfuseLitModule

pytestmark = pytest.mark.usefixtures("single_thread")


class VectorEncoder(nn.Module):
    def __init__(self, in_dim: int, out_dim: int = 8) -> None:
        super().__init__()
        self.net, self.out_dim = nn.Sequential(nn.Linear(in_dim, 16), nn.GELU(), nn.Linear(16, out_dim)), out_dim

    def forward(self, inputs: ModalityInput) -> Encoded:
        return Encoded(self.net(inputs.values)[:, None], present=inputs.present)


def make_batch(seed: int, size: int = 10) -> Batch:
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(size, dtype=torch.bool)
    valid[3] = False  # a placeholder row: neither query nor negative, in whichever chunk it falls
    return Batch({"image": ModalityInput(torch.randn(size, 6, generator=g)),
                  "audio": ModalityInput(torch.randn(size, 5, generator=g))}, ids=[str(i) for i in range(size)],
                 valid=valid)


def make_module(chunk_size: int | None, loss: str = "clip") -> PolyfuseLitModule:
    torch.manual_seed(0)
    return PolyfuseLitModule({"image": VectorEncoder(6), "audio": VectorEncoder(5)}, None,
                             partial(ContrastiveHead, embed_dim=4, pool="first", loss=loss),
                             partial(torch.optim.SGD, lr=0.5), scheduler=None,
                             objective={"grad_cache": {"chunk_size": chunk_size}})


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_training_step_equals_the_plain_step(loss: str):
    plain, cached = make_module(None, loss), make_module(3, loss)
    batch = make_batch(0)
    expected = plain.training_step(batch, 0)
    plain.backward(expected)
    got = cached.training_step(batch, 0)
    cached.backward(got)  # what Lightning calls: the chunks' recompute and backward
    torch.testing.assert_close(got.detach(), expected.detach(), rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), cached.parameters()):
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-5, msg=name)


def _fit_one_step(chunk_size: int | None, precision: str, init_scale: float = 256.0) -> dict[str, torch.Tensor]:
    """The weights after one optimiser step over 2 accumulated batches. ``16-mixed``: fp16 autocast on the
    CPU with a grad scaler starting at ``init_scale`` (Lightning's ``precision="16-mixed"`` switches a CPU
    run to bf16, so the plugin is passed as it is on a GPU); the weights then hold ``_scale``."""
    module = make_module(chunk_size)
    batches = [make_batch(1), make_batch(2)]
    options: dict = {"precision": precision}
    if precision == "16-mixed":
        scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
        options = {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=scaler)]}
    trainer = L.Trainer(max_steps=1, accumulate_grad_batches=2, accelerator="cpu", devices=1, **options,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b))
    weights = {name: p.detach().clone() for name, p in module.named_parameters()}
    if precision == "16-mixed":
        weights["_scale"] = torch.tensor(scaler.get_scale())
    return weights


# bf16: both steps round their activations and gradients to bf16 (in different places): ~1% of the update
# fp16: the cached embedding gradients carry the grad scaler's factor (256 here); ~0.1% of the update
@pytest.mark.parametrize(("precision", "tolerance"), [("32-true", 1e-5), ("bf16-mixed", 3e-2), ("16-mixed", 1e-2)])
def test_one_accumulated_optimiser_step_equals_the_plain_one(precision: str, tolerance: float):
    initial = {name: p.detach().clone() for name, p in make_module(None).named_parameters()}
    plain, cached = _fit_one_step(None, precision), _fit_one_step(3, precision)
    if precision == "16-mixed":
        assert plain.pop("_scale") == cached.pop("_scale") == 256.0                  # no overflow: the step was taken
    for name, value in plain.items():
        update, cached_update = value - initial[name], cached[name] - initial[name]
        scale = update.abs().max().item()
        assert scale > 1e-3, name  # every parameter took the step (so the comparison is not vacuous)
        error = (cached_update - update).abs().max().item()
        assert error <= tolerance * scale, f"{name}: {error:.2e} vs update {scale:.2e}"


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="chunk_size must be a positive"):
        make_module(0)
    with pytest.raises(ValueError, match=r"model.objective: unknown keys \['cache'\]"):
        PolyfuseLitModule({"image": VectorEncoder(6), "audio": VectorEncoder(5)}, None,
                          partial(ContrastiveHead, embed_dim=4), partial(torch.optim.SGD, lr=0.5),
                          objective={"cache": {}})


def test_compiled_model_step_equals_the_plain_step():
    """``callbacks.performance.compile`` (``PerformanceKnobs``: the model compiled in place) with the grad
    cache: the compiled chunked step's loss and gradients equal the eager full-batch step's (1e-5)."""
    from polyfuse.training.performance import PerformanceKnobs

    plain, cached = make_module(None), make_module(3)
    PerformanceKnobs(compile=True, compile_options={"backend": "aot_eager"}).apply(cached.model)
    batch = make_batch(0)
    expected = plain.training_step(batch, 0)
    plain.backward(expected)
    got = cached.training_step(batch, 0)
    cached.backward(got)
    torch.testing.assert_close(got.detach(), expected.detach(), rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), cached.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_an_fp16_overflow_skips_the_step_as_in_the_plain_step():
    """At the grad scaler's default 2^16 this model's fp16 gradients overflow: the cached embedding gradients
    carry the inf into the parameters' gradients, so the scaler skips the step and halves its scale, as it
    does for the plain step."""
    initial = {name: p.detach().clone() for name, p in make_module(None).named_parameters()}
    plain, cached = _fit_one_step(None, "16-mixed", 2.0 ** 16), _fit_one_step(3, "16-mixed", 2.0 ** 16)
    assert plain.pop("_scale") == cached.pop("_scale") == 2.0 ** 15
    for name, value in cached.items():
        assert torch.equal(value, initial[name]) and torch.equal(plain[name], initial[name]), name


def test_clip_recipe_with_activation_checkpointing_equals_the_plain_step(compose_train):
    """``experiment=clip_pretrain_avdigits`` + ``model/objective=grad_cache`` + the
    ``callbacks.performance.grad_checkpointing`` knob on both towers (every transformer block recomputed in
    backward, inside each chunk's recompute) on an AV-digits batch: loss and gradients equal the plain
    step's (1e-5)."""
    import hydra

    from polyfuse.training.performance import PerformanceKnobs

    cfg = compose_train(["experiment=clip_pretrain_avdigits", "data.batch_size=12", "data.num_workers=0"])
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    modules = []
    for chunk_size in (None, 5):
        torch.manual_seed(0)
        module = hydra.utils.instantiate(cfg.model, objective={"grad_cache": {"chunk_size": chunk_size}})
        if chunk_size is not None:
            PerformanceKnobs(grad_checkpointing=["encoders.image", "encoders.text"]).apply(module.model)
            assert all(module.model.encoders[m].grad_checkpointing for m in ("image", "text"))
        torch.manual_seed(1)
        loss = module.training_step(batch, 0)
        module.backward(loss)
        modules.append((module, loss.detach()))
    (plain, expected), (cached, got) = modules
    assert sum(p.grad is not None for p in plain.parameters()) > 20
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), cached.parameters()):
        if p.grad is None:
            assert q.grad is None, name
            continue
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-5, msg=name)

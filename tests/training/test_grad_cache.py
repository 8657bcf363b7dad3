"""Gradient caching (Gao et al., 2021): loss and gradients equal the full-batch computation (fp32, 1e-5),
with dropout replayed; in PolyfuseLitModule, with gradient accumulation and bf16 autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from polyfuse.training.grad_cache import batch_chunks, grad_cache_step

from .grad_cache_models import Towers, chunks_of, global_inputs, grads_of, graph_reference, loss_of

pytestmark = pytest.mark.usefixtures("single_thread")
TOLERANCE = dict(rtol=1e-5, atol=1e-6)


def _cached(model: Towers, chunks, loss_name: str, seed: int):
    model.zero_grad()
    torch.manual_seed(seed)
    loss, outputs = grad_cache_step(model, chunks, lambda o: loss_of(loss_name, o), rows=lambda chunk: chunk[0].shape[0])
    return loss, outputs, grads_of(model)


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
@pytest.mark.parametrize("chunk_size", [3, 4, 10])
def test_without_dropout_equals_one_forward_on_the_whole_batch(loss_name: str, chunk_size: int):
    model, inputs = Towers(dropout=0.0), global_inputs(10)
    expected_loss, expected = graph_reference(model, [(0, [inputs])], loss_name)
    loss, _, grads = _cached(model, chunks_of(inputs, chunk_size), loss_name, seed=0)
    torch.testing.assert_close(loss, expected_loss, **TOLERANCE)
    assert grads.keys() == expected.keys() and sum(bool(g.abs().sum() > 0) for g in grads.values()) >= 9
    for name, grad in expected.items():
        torch.testing.assert_close(grads[name], grad, **TOLERANCE, msg=name)


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_dropout_is_replayed_in_the_recompute(loss_name: str):
    """The reference draws the same chunk-wise dropout masks with every activation kept: equal only if each
    chunk's recompute replays its first pass's RNG state."""
    model, inputs = Towers(dropout=0.3), global_inputs(10)
    chunks = chunks_of(inputs, 4)
    expected_loss, expected = graph_reference(model, [(7, chunks)], loss_name)
    after_reference = torch.get_rng_state()
    loss, _, grads = _cached(model, chunks, loss_name, seed=7)
    torch.testing.assert_close(loss, expected_loss, **TOLERANCE)
    for name, grad in expected.items():
        torch.testing.assert_close(grads[name], grad, **TOLERANCE, msg=name)
    assert torch.equal(torch.get_rng_state(), after_reference)  # the recompute leaves the generator as it found it
    _, no_dropout = graph_reference(Towers(dropout=0.0), [(7, chunks)], loss_name)
    assert not torch.allclose(no_dropout["a.0.weight"], grads["a.0.weight"])  # dropout did act


class CheckpointedTowers(Towers):
    """Tower ``a`` under activation checkpointing (non-reentrant, RNG preserved): it recomputes in backward."""

    def forward(self, chunk):
        from torch.utils.checkpoint import checkpoint

        x_a, x_b = chunk
        a = checkpoint(self.a, x_a, use_reentrant=False)
        return {"a": F.normalize(a, dim=-1), "b": F.normalize(self.b(x_b), dim=-1), "scale": self.log_scale.exp(),
                "bias": self.bias}


def test_composes_with_activation_checkpointing_and_dropout():
    model, inputs = CheckpointedTowers(dropout=0.3), global_inputs(10)
    chunks = chunks_of(inputs, 4)
    expected_loss, expected = graph_reference(model, [(3, chunks)], "siglip")
    loss, _, grads = _cached(model, chunks, "siglip", seed=3)
    torch.testing.assert_close(loss, expected_loss, **TOLERANCE)
    for name, grad in expected.items():
        torch.testing.assert_close(grads[name], grad, **TOLERANCE, msg=name)


def test_outputs_are_concatenated_in_chunk_order():
    model, inputs = Towers(dropout=0.0), global_inputs(7)
    _, outputs, _ = _cached(model, chunks_of(inputs, 3), "clip", seed=0)
    with torch.no_grad():
        whole = model(inputs)
    torch.testing.assert_close(outputs["a"], whole["a"], **TOLERANCE)
    assert outputs["scale"].dim() == 0 and not outputs["a"].requires_grad


def test_a_non_per_sample_output_is_named():
    model, inputs = Towers(dropout=0.0), global_inputs(6)

    def embed(chunk):
        return {**model(chunk), "table": torch.zeros(5, 2)}

    with pytest.raises(ValueError, match=r"\.table has 5 rows for a chunk of 3"):
        grad_cache_step(embed, chunks_of(inputs, 3), lambda o: loss_of("clip", o), rows=lambda c: c[0].shape[0])


def test_batch_chunks_keep_rows_ids_and_validity():
    from polyfuse.batch import Batch, ModalityInput

    valid = torch.tensor([True, False, True, True, True])
    batch = Batch({"image": ModalityInput(torch.arange(10.0).reshape(5, 2))}, {"label": torch.arange(5)},
                  ids=list("abcde"), valid=valid)
    chunks = batch_chunks(batch, 2)
    assert [c.batch_size for c in chunks] == [2, 2, 1]
    assert [c.ids for c in chunks] == [["a", "b"], ["c", "d"], ["e"]]
    assert torch.equal(torch.cat([c.valid for c in chunks]), valid)
    assert torch.equal(torch.cat([c.inputs["image"].values for c in chunks]), batch.inputs["image"].values)
    with pytest.raises(ValueError, match="chunk_size"):
        batch_chunks(batch, 0)


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_composes_with_torch_compile_and_dropout(loss_name: str):
    """A ``torch.compile``-d model (Dynamo + AOTAutograd; ``aot_eager`` keeps the test fast on CPU): its
    no-graph first pass and its recompute are two compiled graphs, and the recompute still replays each
    chunk's dropout masks, so loss and gradients equal the compiled model's full-batch step."""
    model, inputs = Towers(dropout=0.3), global_inputs(10)
    model.compile(backend="aot_eager")
    chunks = chunks_of(inputs, 4)                                   # 4, 4, 2 rows: a recompile for the last
    expected_loss, expected = graph_reference(model, [(7, chunks)], loss_name)
    loss, _, grads = _cached(model, chunks, loss_name, seed=7)
    torch.testing.assert_close(loss, expected_loss, **TOLERANCE)
    for name, grad in expected.items():
        torch.testing.assert_close(grads[name], grad, **TOLERANCE, msg=name)
    _, no_dropout = graph_reference(Towers(dropout=0.0), [(7, chunks)], loss_name)
    assert not torch.allclose(no_dropout["a.0.weight"], grads["a.0.weight"])  # dropout did act

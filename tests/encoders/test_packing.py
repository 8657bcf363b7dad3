"""Packed ("unpad once") text encoders equal the padded path: outputs, pooled summaries and the
gradients of every parameter, on batches of very different lengths (a length-1 sample, an absent
row), with garbage at padded positions, and a clear error for a mask with holes."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from polyfuse.batch import ModalityInput
from polyfuse.encoders import CLIPTextEncoder, Encoder, TextTransformerEncoder

TOL = 1e-5
LENGTHS = (7, 1, 0, 3, 12)                     # a length-1 sample, an all-padding (absent) row, a full one
PRESENT = torch.tensor([True, True, False, True, True])
VOCAB, LENGTH = 50, 12

ENCODERS: dict[str, Callable[..., Encoder]] = {
    "bert": lambda **kw: TextTransformerEncoder(vocab_size=VOCAB, max_length=16, dim=32, depth=2, heads=4, **kw),
    "roberta_positions": lambda **kw: TextTransformerEncoder(vocab_size=VOCAB, max_length=16, dim=32, depth=2, heads=4,
                                                             position_ids="from_mask", position_offset=2, pool="mean",
                                                             **kw),
    "bert_checkpointed": lambda **kw: TextTransformerEncoder(vocab_size=VOCAB, max_length=16, dim=32, depth=2, heads=4,
                                                             grad_checkpointing=True, **kw),
    "clip_causal_argmax": lambda **kw: CLIPTextEncoder(vocab_size=VOCAB, context_length=16, dim=32, depth=2, heads=4,
                                                       proj_dim=24, **kw),
    "clip_causal_last": lambda **kw: CLIPTextEncoder(vocab_size=VOCAB, context_length=16, dim=32, depth=2, heads=4,
                                                     pool="last", layer_scale=0.5, **kw),
    "clip_bidirectional": lambda **kw: CLIPTextEncoder(vocab_size=VOCAB, context_length=16, dim=32, depth=2, heads=4,
                                                       causal=False, pool="mean", **kw),
}


def prefix_mask(lengths=LENGTHS, length: int = LENGTH) -> torch.Tensor:
    return torch.arange(length)[None] < torch.tensor(lengths)[:, None]


def text_batch(seed: int = 0) -> ModalityInput:
    """Right-padded ids (padding 0) of :data:`LENGTHS`; row 2 is absent."""
    generator = torch.Generator().manual_seed(seed)
    mask = prefix_mask()
    ids = torch.randint(1, VOCAB, (len(LENGTHS), LENGTH), generator=generator).masked_fill(~mask, 0)
    return ModalityInput(ids, mask, PRESENT.clone())


def twins(name: str, packed_options: dict | None = None, **kwargs) -> tuple[Encoder, Encoder]:
    """The same weights, padded and packed (``packed_options``: the packed twin's own options, default
    ``packing=True``); norms randomised so every parameter matters."""
    torch.manual_seed(0)
    padded = ENCODERS[name](**kwargs)
    for module in padded.modules():
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.normal_(module.weight, 1.0, 0.2)
            torch.nn.init.normal_(module.bias, 0.0, 0.2)
    packed = ENCODERS[name](**(packed_options or {"packing": True}), **kwargs)
    packed.load_state_dict(padded.state_dict())
    return padded.train(), packed.train()


def run(encoder: Encoder, inputs: ModalityInput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    encoder.zero_grad(set_to_none=True)
    tokens = encoder(inputs).tokens
    weights = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(3))
    (tokens * weights).sum().backward()
    return tokens.detach(), {n: p.grad for n, p in encoder.named_parameters()}


def rows_seen_by_blocks(encoder: Encoder) -> list[tuple[int, ...]]:
    """Input shapes of the first block (recorded through a forward pre-hook)."""
    shapes: list[tuple[int, ...]] = []
    encoder.blocks[0].register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    return shapes


@pytest.mark.parametrize("output", ["tokens", "pooled"])
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_packed_equals_padded_outputs_and_gradients(name, output):
    padded, packed = twins(name, output=output)
    shapes = rows_seen_by_blocks(packed)
    inputs = text_batch()
    expected, expected_grads = run(padded, inputs)
    tokens, grads = run(packed, inputs)
    assert set(shapes) == {(sum(LENGTHS), 32)}  # only real tokens (checkpointing runs a block twice)
    assert tokens.shape == expected.shape
    assert (tokens - expected).abs().max() <= TOL
    if output == "tokens":
        assert torch.equal(tokens[~prefix_mask()], torch.zeros_like(tokens[~prefix_mask()]))
    assert expected_grads.keys() == grads.keys()
    for parameter, grad in grads.items():
        assert (grad is None) == (expected_grads[parameter] is None), parameter
        if grad is not None:
            assert (grad - expected_grads[parameter]).abs().max() <= TOL, parameter


@pytest.mark.parametrize("name", ["bert", "clip_causal_argmax"])
def test_a_batch_of_placeholders_runs_packed(name):
    """Every row absent (the collate's batch of placeholders): no token to compute on, zeros out."""
    padded, packed = twins(name, output="pooled")
    inputs = ModalityInput(torch.zeros(3, 6, dtype=torch.long), torch.zeros(3, 6, dtype=torch.bool),
                           torch.zeros(3, dtype=torch.bool))
    expected, _ = run(padded, inputs)
    tokens, _ = run(packed, inputs)
    assert torch.equal(tokens, expected) and not tokens.abs().sum()


@pytest.mark.parametrize("name", ["bert", "clip_causal_last"])
def test_packed_never_reads_padded_positions(name):
    """Out-of-vocabulary ids at padded positions (given straight to ``encode``, past the base
    class's zeroing) are never looked up: the packed output equals the clean one."""
    padded, packed = twins(name)
    inputs = text_batch()
    with torch.no_grad():
        clean, _ = padded.encode(inputs.values, inputs.mask)
        garbage = inputs.values.masked_fill(~inputs.mask, 10 ** 6)
        tokens, _ = packed.encode(garbage, inputs.mask)
    assert torch.isfinite(tokens).all()
    assert (tokens - clean).abs().max() <= TOL


def test_packing_skips_unpadded_batches_and_attention_maps():
    _, packed = twins("bert")
    shapes = rows_seen_by_blocks(packed)
    ids = torch.randint(1, VOCAB, (2, 5))
    packed(ModalityInput(ids, torch.ones(2, 5, dtype=torch.bool)))
    packed(ModalityInput(ids))
    inputs = text_batch()
    _, _, maps = packed.encode_with_attention(inputs.values, inputs.mask, need_weights=True)
    assert shapes == [(2, 5, 32), (2, 5, 32), (len(LENGTHS), LENGTH, 32)]  # nothing to skip: padded path
    assert len(maps) == 2 and maps[0].shape == (len(LENGTHS), 4, LENGTH, LENGTH)


@pytest.mark.parametrize("name", ["bert", "clip_causal_argmax"])
def test_mask_with_holes_names_modality_and_sample(name):
    padded, packed = twins(name)
    packed.modality = "caption"
    inputs = text_batch()
    holes = inputs.mask.clone()
    holes[3, 1] = False                         # sample 3: a real token after padding
    with pytest.raises(ValueError, match=r"caption: sample 3's mask is not a prefix"):
        packed(ModalityInput(inputs.values, holes, inputs.present))
    padded(ModalityInput(inputs.values, holes, inputs.present))  # the padded path accepts any mask


def backend_twins(name: str, backend: str, device: str) -> tuple[Encoder, Encoder]:
    padded, packed = twins(name, attention_backend=backend)
    return padded.to(device), packed.to(device)


def assert_backend_parity(name: str, backend: str, device: str, tol: float) -> None:
    padded, packed = backend_twins(name, backend, device)
    inputs = text_batch()
    inputs = ModalityInput(inputs.values.to(device), inputs.mask.to(device), inputs.present.to(device))
    expected, expected_grads = run(padded, inputs)
    tokens, grads = run(packed, inputs)
    assert (tokens - expected).abs().max() <= tol
    for parameter, grad in grads.items():
        assert (grad - expected_grads[parameter]).abs().max() <= tol, parameter


@pytest.mark.parametrize("backend", ["reference", "sdpa"])  # flex: no CPU backward
@pytest.mark.parametrize("name", ["bert", "clip_causal_last"])
def test_packed_equals_padded_on_every_cpu_backend(name, backend):
    assert_backend_parity(name, backend, "cpu", TOL)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["sdpa", "flex", "triton", "auto"])
@pytest.mark.parametrize("name", ["bert", "clip_causal_last"])
def test_packed_equals_padded_on_cuda(name, backend):
    assert_backend_parity(name, backend, "cuda", 1e-4)

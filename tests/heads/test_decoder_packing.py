"""Packed teacher forcing of the caption decoder equals the padded path: logits on real positions,
the loss, and the gradients of every parameter and of the memory; captions of very different lengths
(one token, none), a memory with holes and an absent row, garbage at padded memory positions, and a
clear error for a caption with holes."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from polyfuse.fusion.base import FusionOutput
from polyfuse.heads import CaptioningHead
from polyfuse.heads.decoder import CaptionDecoder, key_packing

from . import head_cases as cases

TOL = 1e-5
CAPTION_LENGTHS = (5, 1, 0, 8, 3)             # one token, an empty row (a placeholder), a full row
MEMORY_MASK = torch.tensor([[1, 1, 1, 1, 0, 0],
                            [1, 0, 1, 0, 1, 1],   # holes: concatenated modalities
                            [0, 0, 0, 0, 0, 0],   # absent memory
                            [1, 1, 1, 1, 1, 1],
                            [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
DECODER = partial(CaptionDecoder, 20, dim=16, memory_dim=12, depth=2, heads=2, max_positions=10, pad_id=cases.PAD)


def captions(lengths=CAPTION_LENGTHS, length: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    mask = torch.arange(length)[None] < torch.tensor(lengths)[:, None]
    return torch.randint(5, 20, (len(lengths), length), generator=generator).masked_fill(~mask, cases.PAD)


def memory() -> torch.Tensor:
    return torch.randn(5, 6, 12, generator=torch.Generator().manual_seed(1))


def twins(**kwargs) -> tuple[CaptionDecoder, CaptionDecoder]:
    torch.manual_seed(0)
    padded = DECODER(**kwargs)
    for module in padded.modules():
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.normal_(module.weight, 1.0, 0.2)
            torch.nn.init.normal_(module.bias, 0.0, 0.2)
    packed = DECODER(packing=True, **kwargs)
    packed.load_state_dict(padded.state_dict())
    return padded.train(), packed.train()


def run(decoder: CaptionDecoder, tokens: torch.Tensor, mask: torch.Tensor | None):
    decoder.zero_grad(set_to_none=True)
    source = memory().requires_grad_(True)
    logits = decoder(tokens, source, mask)
    real = tokens != cases.PAD
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2))
    (logits * weights)[real].sum().backward()   # padded positions are ignored by the loss
    grads = {name: p.grad for name, p in decoder.named_parameters()}
    return logits.detach(), grads, source.grad


@pytest.mark.parametrize("memory_mask", [MEMORY_MASK, None, torch.zeros(5, 6, dtype=torch.bool)],
                         ids=["memory_with_holes", "memory_all_real", "memory_all_absent"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_teacher_forcing_equals_padded(memory_mask, checkpointing):
    padded, packed = twins()
    for decoder in (padded, packed):
        for layer in decoder.layers:
            layer.grad_checkpointing = checkpointing
    tokens = captions()
    real = tokens != cases.PAD
    expected, expected_grads, expected_memory_grad = run(padded, tokens, memory_mask)
    logits, grads, memory_grad = run(packed, tokens, memory_mask)
    assert logits.shape == expected.shape
    assert (logits[real] - expected[real]).abs().max() <= TOL
    assert torch.equal(logits[~real], torch.zeros_like(logits[~real]))  # padded back with zeros
    assert (memory_grad - expected_memory_grad).abs().max() <= TOL
    for name, grad in grads.items():
        assert (grad is None) == (expected_grads[name] is None), name
        if grad is not None:
            assert (grad - expected_grads[name]).abs().max() <= TOL, name


def test_garbage_at_masked_memory_never_reaches_the_logits():
    _, packed = twins()
    tokens, source = captions(), memory()
    garbage = source.masked_fill(~MEMORY_MASK[..., None], float("nan"))
    with torch.no_grad():
        clean, dirty = packed(tokens, source, MEMORY_MASK), packed(tokens, garbage, MEMORY_MASK)
    assert torch.isfinite(dirty).all() and torch.equal(clean, dirty)


def test_key_packing_gathers_valid_keys_in_row_order():
    packing = key_packing(MEMORY_MASK, 5, 6)
    assert packing.cu_seqlens.tolist() == [0, 4, 8, 8, 14, 15] and packing.max_seqlen == 6
    source = memory()
    assert torch.equal(packing.unpad(source), source[MEMORY_MASK])
    assert key_packing(None, 2, 3).cu_seqlens.tolist() == [0, 3, 6]


def test_generation_stays_padded_and_equal():
    padded, packed = twins()
    source, tokens = memory(), captions(lengths=(3,) * 5, length=3)
    with torch.no_grad():
        cache_a, cache_b = padded.start(source, MEMORY_MASK), packed.start(source, MEMORY_MASK)
        torch.testing.assert_close(packed(tokens, cache=cache_b), padded(tokens, cache=cache_a), atol=TOL, rtol=0)


HEAD = partial(CaptioningHead, vocab_size=cases.VOCAB, dim=16, depth=2, heads=2, max_length=8, dropout=0.0,
               bos_id=cases.CLS, eos_id=cases.SEP, pad_id=cases.PAD)


def test_captioning_head_loss_and_gradients_equal_with_packing():
    batch = cases.batch(5, caption=["a"] * 5)
    fused = FusionOutput(pooled=torch.zeros(5, 16), tokens=memory()[..., :4].repeat(1, 1, 4), mask=MEMORY_MASK)
    losses, grads = [], []
    for packing in (False, True):
        torch.manual_seed(0)
        head = HEAD(in_dim=16, packing=packing).train()
        loss = head.loss(head(fused, batch), batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append({name: p.grad for name, p in head.named_parameters()})
    assert (losses[0] - losses[1]).abs() <= TOL
    for name, grad in grads[1].items():
        assert (grad - grads[0][name]).abs().max() <= TOL, name


def test_caption_with_holes_names_the_target_and_sample():
    batch = cases.batch(5, caption=["a"] * 5)
    batch.targets["caption_ids"][2, 1] = cases.PAD   # sample 2: a word after padding
    head = HEAD(in_dim=16, packing=True)
    fused = FusionOutput(pooled=torch.zeros(5, 16), tokens=torch.randn(5, 3, 16))
    with pytest.raises(ValueError, match=r"caption_ids: sample 2's mask is not a prefix"):
        head(fused, batch)
    HEAD(in_dim=16)(fused, batch)  # the padded path takes it

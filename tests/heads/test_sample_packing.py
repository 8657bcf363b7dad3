"""Sample packing in the caption decoder and the captioning head (docs/packing.md): several captions per
row of a fixed token budget, each attending causally to itself and to its own sample's memory, give
every caption the logits, the loss and the gradients it has on the padded path (fp32, <= 1e-5)."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from polyfuse.data.packing import SamplePackingCollator, pack_padded
from polyfuse.fusion.base import FusionOutput
from polyfuse.heads import CaptioningHead
from polyfuse.heads.decoder import CaptionDecoder

from . import head_cases as cases

TOL = 1e-5
LENGTHS = (5, 1, 0, 8, 3, 7)                  # one token, an empty caption, a full row
MEMORY_MASK = torch.tensor([[1, 1, 1, 1, 0, 0],
                            [1, 0, 1, 0, 1, 1],   # holes: concatenated modalities
                            [0, 0, 0, 0, 0, 0],   # absent memory
                            [1, 1, 1, 1, 1, 1],
                            [0, 0, 0, 0, 0, 1],
                            [1, 1, 0, 0, 0, 0]], dtype=torch.bool)


def captions(length: int = 8) -> torch.Tensor:
    mask = torch.arange(length)[None] < torch.tensor(LENGTHS)[:, None]
    ids = torch.randint(5, 20, (len(LENGTHS), length), generator=torch.Generator().manual_seed(0))
    return ids.masked_fill(~mask, cases.PAD)


def memory() -> torch.Tensor:
    return torch.randn(len(LENGTHS), 6, 12, generator=torch.Generator().manual_seed(1))


def decoder() -> CaptionDecoder:
    torch.manual_seed(0)
    model = CaptionDecoder(20, dim=16, memory_dim=12, depth=2, heads=2, max_positions=10, pad_id=cases.PAD)
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.normal_(module.weight, 1.0, 0.2)
            torch.nn.init.normal_(module.bias, 0.0, 0.2)
    return model.train()


def gradients(model: CaptionDecoder, source: torch.Tensor) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return {**grads, "memory": source.grad}


def padded_reference(model: CaptionDecoder, tokens: torch.Tensor, weights: torch.Tensor):
    source = memory().requires_grad_(True)
    logits = model(tokens, source, MEMORY_MASK)
    (logits * weights)[tokens != cases.PAD].sum().backward()
    return logits.detach(), gradients(model, source)


@pytest.mark.parametrize("layout", ["rows", "samples"])
@pytest.mark.parametrize("strategy, budget, count", [("ffd", 10, 3), ("greedy", 9, 4), ("ffd", 24, 1)])
def test_packed_rows_give_every_caption_its_padded_logits_and_gradients(layout, strategy, budget, count):
    model, tokens = decoder(), captions()
    weights = torch.randn(*tokens.shape, 20, generator=torch.Generator().manual_seed(2))
    expected, expected_grads = padded_reference(model, tokens, weights)
    rows = pack_padded(tokens, LENGTHS, budget, strategy, pad_id=cases.PAD)
    assert tuple(rows.input_ids.shape) == (count, budget)

    source = memory().requires_grad_(True)
    if layout == "rows":  # whole fixed-width rows, row padding included
        logits = rows.unpack(model.forward_rows(rows, source, MEMORY_MASK), tokens.shape[1])
    else:  # the samples' tokens only (the collator's tokens / positions / packing)
        order = rows.order
        flat = model.forward_packed(rows.tokens(), rows.positions(), rows.packing(), source[order], MEMORY_MASK[order])
        logits = rows.unpack(torch.zeros(*rows.input_ids.shape, 20).index_put((rows.mask,), flat), tokens.shape[1])
    real = tokens != cases.PAD
    (logits * weights)[real].sum().backward()
    assert (logits[real] - expected[real]).abs().max() <= TOL
    assert torch.equal(logits[~real], torch.zeros_like(logits[~real]))
    grads = gradients(model, source)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        assert (grad - expected_grads[name]).abs().max() <= TOL, name


def test_row_padding_and_other_captions_never_leak():
    """NaN at masked memory and a changed neighbour caption leave a caption's logits unchanged."""
    model, tokens = decoder().eval(), captions()
    rows = pack_padded(tokens, LENGTHS, 10, pad_id=cases.PAD)
    source = memory()
    with torch.no_grad():
        clean = rows.unpack(model.forward_rows(rows, source, MEMORY_MASK), 8)
        dirty = rows.unpack(model.forward_rows(rows, source.masked_fill(~MEMORY_MASK[..., None], float("nan")),
                                               MEMORY_MASK), 8)
        other = tokens.clone()
        other[0, :5] = 7  # caption 0 shares a row with others under ffd
        changed = rows.unpack(model.forward_rows(pack_padded(other, LENGTHS, 10, pad_id=cases.PAD), source,
                                                 MEMORY_MASK), 8)
    assert torch.isfinite(dirty).all() and torch.equal(clean, dirty)
    torch.testing.assert_close(changed[1:], clean[1:], atol=TOL, rtol=0)
    assert not torch.allclose(changed[0], clean[0])


def test_segments_cut_samples_and_row_tails_never_across_rows():
    rows = SamplePackingCollator(budget=5, strategy="greedy")([[5, 6], [7, 8, 9], [1, 2, 3, 4], [6]])
    packing, sample = rows.segments()
    assert rows.sequence_ids.tolist() == [[0, 0, 1, 1, 1], [2, 2, 2, 2, 3]]
    assert packing.lengths().tolist() == [2, 3, 4, 1] and sample.tolist() == [0, 1, 2, 3]
    rows = SamplePackingCollator(budget=6, strategy="greedy", rows=3)([[5, 6], [7, 8, 9, 1, 2]])
    packing, sample = rows.segments()
    assert packing.lengths().tolist() == [2, 4, 5, 1, 6] and sample.tolist() == [0, -1, 1, -1, -1]


def test_forward_packed_rejects_inconsistent_inputs():
    model, rows = decoder(), pack_padded(captions(), LENGTHS, 10, pad_id=cases.PAD)
    source = memory()[rows.order]
    with pytest.raises(ValueError, match="caption tokens must be \\(T,\\)"):
        model.forward_packed(rows.input_ids, rows.position_ids, rows.packing(), source)
    with pytest.raises(ValueError, match="one row per packed sequence"):
        model.forward_packed(rows.tokens(), rows.positions(), rows.packing(), source[:3])
    with pytest.raises(ValueError, match="beyond max_positions=10"):
        model.forward_packed(rows.tokens(), rows.positions() + 5, rows.packing(), source)


HEAD = partial(CaptioningHead, vocab_size=cases.VOCAB, dim=16, depth=2, heads=2, max_length=8, dropout=0.0,
               bos_id=cases.CLS, eos_id=cases.SEP, pad_id=cases.PAD)


def head_run(batch, fused, **options) -> tuple[CaptioningHead, torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    head = HEAD(in_dim=16, **options).train()
    loss = head.loss(head(fused, batch), batch)
    loss.backward()
    return head, loss.detach(), {name: p.grad for name, p in head.named_parameters()}


@pytest.mark.parametrize("options", [{"budget": 8}, {"budget": 20, "strategy": "greedy", "rows": 4}])
def test_captioning_head_trains_packed_with_the_padded_loss_and_gradients(options):
    batch = cases.batch(6, caption=["a"] * 6)
    batch.valid = torch.tensor([True, True, False, True, True, True])  # a placeholder row stays out
    fused = FusionOutput(pooled=torch.zeros(6, 16), tokens=memory()[..., :4].repeat(1, 1, 4), mask=MEMORY_MASK)
    _, expected, expected_grads = head_run(batch, fused)
    head, loss, grads = head_run(batch, fused, sample_packing=options)
    calls = []
    head.decoder.forward_rows = lambda *args: calls.append(args) or CaptionDecoder.forward_rows(head.decoder, *args)
    head(fused, batch)
    assert len(calls) == 1 and calls[0][0].input_ids.shape[1] == options["budget"]  # it really ran packed
    assert (loss - expected).abs() <= TOL
    for name, grad in grads.items():
        assert (grad - expected_grads[name]).abs().max() <= TOL, name
    head.eval().generate_in_eval = False
    head(fused, batch)
    assert len(calls) == 1  # evaluation takes the normal path


def test_caption_longer_than_the_budget_is_named():
    batch = cases.batch(6, caption=["a"] * 6)
    fused = FusionOutput(pooled=torch.zeros(6, 16), tokens=torch.randn(6, 3, 16))
    length = int((batch.targets["caption_ids"] != cases.PAD).sum(1).max()) - 1  # the decoder reads all but [SEP]
    head = HEAD(in_dim=16, sample_packing={"budget": length - 1}).train()
    with pytest.raises(ValueError, match=rf"caption_ids: sample \d has {length} tokens, more than the packing "
                                         rf"budget of {length - 1}"):
        head(fused, batch)
    with pytest.raises(ValueError, match="sample_packing must be"):
        HEAD(in_dim=16, sample_packing={"budget": 8, "stratgy": "ffd"})

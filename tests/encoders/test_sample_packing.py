"""Sample-packed text encoders (``sample_packing={budget, strategy, rows}``): in training the texts
run whole in fixed-width rows of ``budget`` tokens, attention within each text, positions restarting,
and outputs, pooled summaries and every parameter's gradient equal the padded encoder's; a text
longer than the budget or a mask with holes is an error naming the modality and the sample; the
collator's rows feed :meth:`forward_rows` for MLM pre-training with each sample's loss unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from polyfuse.batch import ModalityInput
from polyfuse.data.packing import SamplePackingCollator
from polyfuse.encoders import Encoder, TextTransformerEncoder
from polyfuse.heads.mlm import mask_tokens

from .test_packing import ENCODERS, LENGTHS, LENGTH, TOL, VOCAB, prefix_mask, rows_seen_by_blocks, run, text_batch
from .test_packing import twins as packed_twins

BUDGET = 16


def twins(name: str, sample_packing: dict, **kwargs) -> tuple[Encoder, Encoder]:
    """The same weights, padded and sample-packed (:func:`test_packing.twins`)."""
    return packed_twins(name, {"sample_packing": sample_packing}, **kwargs)


def assert_same(padded: Encoder, packed: Encoder, inputs: ModalityInput) -> torch.Tensor:
    expected, expected_grads = run(padded, inputs)
    tokens, grads = run(packed, inputs)
    assert tokens.shape == expected.shape and (tokens - expected).abs().max() <= TOL
    for parameter, grad in grads.items():
        assert (grad is None) == (expected_grads[parameter] is None), parameter
        if grad is not None:  # fp32: 1e-5, relative where a gradient sums many rows in another order
            scale = max(1.0, float(expected_grads[parameter].abs().max()))
            assert (grad - expected_grads[parameter]).abs().max() <= TOL * scale, parameter
    return tokens


@pytest.mark.parametrize("strategy", ["ffd", "greedy"])
@pytest.mark.parametrize("output", ["tokens", "pooled"])
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_sample_packed_equals_padded_outputs_and_gradients(name, output, strategy):
    padded, packed = twins(name, {"budget": BUDGET, "strategy": strategy}, output=output)
    shapes = rows_seen_by_blocks(packed)
    tokens = assert_same(padded, packed, text_batch())
    # lengths 7, 1, 0, 3, 12 in rows of 16: ffd {12, 3, 1} {7}; greedy {7, 1, 0, 3} {12}: two rows either way
    assert set(shapes) == {(2 * BUDGET, 32)}
    if output == "tokens":
        assert torch.equal(tokens[~prefix_mask()], torch.zeros_like(tokens[~prefix_mask()]))


def test_a_fixed_row_count_changes_nothing_but_the_shape():
    padded, packed = twins("clip_causal_last", {"budget": BUDGET, "rows": 4})
    shapes = rows_seen_by_blocks(packed)
    assert_same(padded, packed, text_batch())
    assert set(shapes) == {(4 * BUDGET, 32)}
    _, packed = twins("bert", {"budget": 12, "rows": 1})
    with pytest.raises(ValueError, match="5 samples need 2 rows of 12 tokens, more than rows=1"):
        packed(text_batch())


def test_a_neighbour_in_the_same_row_changes_nothing():
    """Sample 3 shares a row with sample 4 (ffd); changing sample 4's tokens leaves sample 3's output as it was."""
    _, packed = twins("clip_causal_argmax", {"budget": BUDGET})
    inputs = text_batch()
    with torch.no_grad():
        before = packed(inputs).tokens
        changed = inputs.values.clone()
        changed[4, :12] = torch.randint(1, VOCAB, (12,), generator=torch.Generator().manual_seed(9))
        after = packed(ModalityInput(changed, inputs.mask, inputs.present)).tokens
    assert torch.equal(before[:4], after[:4]) and not torch.equal(before[4], after[4])


def test_evaluation_maps_and_unpadded_batches_take_the_padded_path():
    _, packed = twins("bert", {"budget": BUDGET})
    shapes = rows_seen_by_blocks(packed)
    inputs = text_batch()
    packed.eval()(inputs)                                             # evaluation: the normal path
    packed.train().encode_with_attention(inputs.values, inputs.mask)  # attention maps are (B, H, L, L)
    packed(ModalityInput(inputs.values, torch.ones_like(inputs.mask)))  # nothing is padding
    assert shapes == [(len(LENGTHS), LENGTH, 32)] * 3


@pytest.mark.parametrize("name", ["bert", "clip_causal_last"])
def test_bad_input_names_the_modality_and_the_sample(name):
    _, packed = twins(name, {"budget": 8})
    packed.modality = "caption"
    with pytest.raises(ValueError, match=r"caption: sample 4 has 12 tokens, more than the packing budget of 8"):
        packed(text_batch())
    _, packed = twins(name, {"budget": BUDGET})
    packed.modality = "caption"
    inputs = text_batch()
    holes = inputs.mask.clone()
    holes[3, 1] = False
    with pytest.raises(ValueError, match=r"caption: sample 3's mask is not a prefix"):
        packed(ModalityInput(inputs.values, holes, inputs.present))
    with pytest.raises(ValueError, match="sample_packing must be"):
        ENCODERS[name](sample_packing={"budget": 8, "stratgy": "ffd"})
    with pytest.raises(ValueError, match="sample_packing must be"):
        ENCODERS[name](sample_packing={"budget": 0})


def test_mlm_pretraining_on_collator_rows_keeps_every_sample_loss():
    """BERT's MLM on the collator's packed rows: each sample's summed loss equals its loss run alone."""
    torch.manual_seed(0)
    encoder = TextTransformerEncoder(vocab_size=VOCAB, max_length=16, dim=32, depth=2, heads=4).train()
    lm_head = torch.nn.Linear(32, VOCAB)
    generator = torch.Generator().manual_seed(4)
    samples = []
    for length in (9, 2, 5, 14, 1, 6):
        ids = torch.randint(1, VOCAB - 1, (1, length), generator=generator)
        corrupted, labels = mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), VOCAB, VOCAB - 1,
                                        generator=generator)
        samples.append({"input_ids": corrupted[0], "labels": labels[0]})
    rows = SamplePackingCollator(budget=BUDGET)(samples)
    assert rows.input_ids.shape[0] < len(samples)  # several samples share a row
    logits = lm_head(encoder.forward_rows(rows))[rows.mask]
    per_token = F.cross_entropy(logits, rows.targets(), ignore_index=-100, reduction="none")
    packed = rows.per_sample(per_token).detach()
    for position, index in enumerate(rows.order.tolist()):
        with torch.no_grad():
            alone = lm_head(encoder(ModalityInput(samples[index]["input_ids"][None])).tokens[0])
        expected = F.cross_entropy(alone, samples[index]["labels"], ignore_index=-100, reduction="sum")
        assert abs(float(packed[position]) - float(expected)) <= TOL * 10, index
    with pytest.raises(ValueError, match="packed text position 16 exceeds the encoder's max_length 16"):
        encoder.forward_rows(SamplePackingCollator(budget=20)([list(range(1, 18))]))

"""Sample packing (several captions per row, block-diagonal attention): layout, bad input, and losses
equal to the captions computed one by one (docs/packing.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from polyfuse.attention import using_backend
from polyfuse.data.packing import SamplePackingCollator, pack_lengths
from polyfuse.heads.decoder import CaptionDecoder

VOCAB = 30


def captions(lengths: list[int], seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1, VOCAB, (n,), generator=generator).tolist() for n in lengths]


@pytest.mark.parametrize("strategy", ["ffd", "greedy"])
def test_rows_hold_every_sample_once_within_the_budget(strategy):
    lengths = [7, 3, 9, 2, 5, 8, 1, 4]
    rows = pack_lengths(lengths, budget=10, strategy=strategy)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    if strategy == "greedy":  # arrival order, a new row only when the next sample does not fit
        assert rows == [[0, 1], [2], [3, 4], [5, 6], [7]]
    else:
        assert rows == [[2, 6], [3, 5], [0, 1], [4, 7]]  # 39 tokens in the fewest rows of 10


def test_ffd_packs_tighter_than_greedy():
    lengths = [6, 5, 5, 4]
    assert len(pack_lengths(lengths, 10, "ffd")) == 2 and len(pack_lengths(lengths, 10, "greedy")) == 3


def test_layout_positions_restart_and_labels_stay_inside_each_sample():
    packed = SamplePackingCollator(budget=7, strategy="greedy", next_token=True)([[5, 6, 7], [8, 9], [10, 11, 12]])
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9, 0, 0], [10, 11, 12, 0, 0, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 0, 1, 0, 0], [0, 1, 2, 0, 0, 0, 0]]
    assert packed.sequence_ids.tolist() == [[0, 0, 0, 1, 1, -1, -1], [2, 2, 2, -1, -1, -1, -1]]
    assert packed.labels[0].tolist() == [6, 7, -100, 9, -100, -100, -100]
    assert packed.cu_seqlens.tolist() == [0, 3, 5, 8] and packed.order.tolist() == [0, 1, 2]
    assert packed.tokens().tolist() == [5, 6, 7, 8, 9, 10, 11, 12]
    mask = packed.attention_mask(causal=True)[0]
    assert mask[4].tolist() == [False, False, False, True, True, False, False]  # no cross-sample key
    assert not mask[5].any()  # padding attends nothing


def test_given_labels_are_packed_as_they_are():
    packed = SamplePackingCollator(budget=6)([{"input_ids": [4, 5], "labels": [-100, 9]}, {"input_ids": [6]}])
    assert packed.targets().tolist() == [-100, 9, -100]
    with pytest.raises(ValueError, match="sample 0: labels"):
        SamplePackingCollator(budget=6)([{"input_ids": [4, 5], "labels": [1]}])


def test_sample_longer_than_the_budget_is_named_or_truncated():
    samples = [[1, 2], [3, 4, 5, 6, 7], [8]]
    with pytest.raises(ValueError, match="sample 1 has 5 tokens, more than the packing budget of 4"):
        SamplePackingCollator(budget=4)(samples)
    packed = SamplePackingCollator(budget=4, truncate=True)(samples)
    assert packed.truncated == 1 and packed.lengths().sum() == 2 + 4 + 1
    with pytest.raises(ValueError, match="more than rows=1"):
        SamplePackingCollator(budget=4, rows=1)([[1, 2, 3], [4, 5]])
    assert SamplePackingCollator(budget=4, rows=3)([[1, 2, 3]]).input_ids.shape == (3, 4)


@pytest.mark.parametrize("lengths, budget, order", [([5, 12, 9], 40, [0, 1, 2]), ([5, 12, 9, 7], 20, [1, 3, 0, 2])],
                         ids=["one-row-of-three", "two-rows-ffd"])
def test_packed_row_of_three_captions_has_the_losses_of_the_three_alone(lengths, budget, order):
    """A caption decoder over packed rows (block-diagonal causal self-attention, each caption's own
    image memory) gives every caption the loss it has alone: sum, token mean and per-caption means."""
    torch.manual_seed(0)
    count = len(lengths)
    decoder = CaptionDecoder(VOCAB, dim=32, memory_dim=16, depth=2, heads=4, max_positions=40)
    texts = captions(lengths)
    memory = torch.randn(count, 6, 16)
    memory_mask = torch.arange(6)[None, :] < torch.tensor([3, 6, 4, 5][:count])[:, None]
    packed = SamplePackingCollator(budget=budget, next_token=True)(texts)
    assert packed.order.tolist() == order and packed.input_ids.shape[0] == (1 if count == 3 else 2)

    with using_backend("sdpa"):
        # alone: a padded batch of the three captions (the decoder's padded path)
        tokens = torch.zeros(count, 12, dtype=torch.long)
        targets = torch.full((count, 12), -100)
        for index, text in enumerate(texts):
            tokens[index, :len(text)] = torch.tensor(text)
            targets[index, :len(text) - 1] = torch.tensor(text[1:])
        logits = decoder(tokens, memory, memory_mask)
        alone = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(count, 12)
        alone_sum = alone.sum(1)

        # packed: the row's tokens, restarting positions, attention per caption, each its own memory
        order = packed.order
        packed_logits = decoder.forward_packed(packed.tokens(), packed.positions(), packed.packing(), memory[order],
                                               memory_mask[order])
        per_token = F.cross_entropy(packed_logits, packed.targets(), reduction="none")
        packed_sum = packed.per_sample(per_token)

    torch.testing.assert_close(packed_sum, alone_sum[order], atol=1e-5, rtol=1e-5)
    counts = packed.per_sample((packed.targets() != -100).float())
    torch.testing.assert_close(packed_sum / counts, (alone_sum / (targets != -100).sum(1))[order], atol=1e-5,
                               rtol=1e-5)
    torch.testing.assert_close(per_token.sum() / counts.sum(), alone.sum() / (targets != -100).sum(), atol=1e-6,
                               rtol=1e-6)

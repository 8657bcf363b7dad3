"""Greedy and beam search on toy models whose best sequences are known."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from polyfuse.heads.generation import beam_search, greedy_search

BOS, EOS, PAD = 1, 2, 0


class MarkovModel:
    """Next-token log-probabilities depend only on the previous token: ``table[sample, prev] -> (V,)``."""

    def __init__(self, table: torch.Tensor, copies: int = 1) -> None:
        self.table = table.repeat_interleave(copies, dim=0)   # (N, V, V)
        self.rows = torch.arange(self.table.shape[0])

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[self.rows, tokens[:, -1]]

    def reorder(self, index: torch.Tensor) -> None:
        self.rows = self.rows[index]


def _random_table(batch: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, vocab, vocab, generator=g) * 2
    logits[:, :, PAD] = -1e9   # never emit padding or BOS
    logits[:, :, BOS] = -1e9
    return logits.log_softmax(dim=-1)


def _sequence_score(table: torch.Tensor, sequence: tuple[int, ...]) -> float:
    prev, total = BOS, 0.0
    for token in sequence:
        total += float(table[prev, token])
        prev = token
    return total


def _brute_force(table: torch.Tensor, vocab: int, max_length: int, length_penalty: float) -> tuple[tuple[int, ...], float]:
    """Best normalised score over every sequence that ends in EOS or reaches max_length."""
    words = [t for t in range(vocab) if t not in (PAD, BOS, EOS)]
    best, best_score = (), -math.inf
    for length in range(1, max_length + 1):
        candidates = [body + (EOS,) for body in itertools.product(words, repeat=length - 1)]
        if length == max_length:
            candidates += list(itertools.product(words, repeat=length))
        for sequence in candidates:
            score = _sequence_score(table, sequence) / length ** length_penalty
            if score > best_score:
                best, best_score = sequence, score
    return best, best_score


def _strip(row: torch.Tensor) -> tuple[int, ...]:
    return tuple(t for t in row.tolist() if t != PAD)


def test_greedy_misses_and_beam_finds_the_known_best_sequence() -> None:
    # vocab: 0 PAD, 1 BOS, 2 EOS, 3 A, 4 B. From BOS: A 0.6, B 0.4. After A: EOS 0.3, A 0.35, B 0.35.
    # After B: EOS 0.95. Greedy: A then ... (best path 0.6 * 0.35 ...); the best sequence is "B EOS" (0.38).
    probs = torch.full((5, 5), 1e-9)
    probs[BOS, 3], probs[BOS, 4] = 0.6, 0.4
    probs[3, EOS], probs[3, 3], probs[3, 4] = 0.3, 0.35, 0.35
    probs[4, EOS], probs[4, 3] = 0.95, 0.05
    table = (probs / probs.sum(-1, keepdim=True)).log()[None]
    greedy, _ = greedy_search(MarkovModel(table), 1, BOS, EOS, PAD, max_length=4)
    assert _strip(greedy[0])[:1] == (3,)
    beams, scores = beam_search(MarkovModel(table, 2), 1, BOS, EOS, PAD, max_length=4, num_beams=2, length_penalty=0.0)
    assert _strip(beams[0]) == (4, EOS)
    assert scores[0].item() == pytest.approx(math.log(0.4 * 0.95), rel=1e-4)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_beam_one_equals_greedy(length_penalty: float) -> None:
    table = _random_table(4, 7, seed=3)
    greedy, greedy_scores = greedy_search(MarkovModel(table), 4, BOS, EOS, PAD, max_length=6)
    beams, _ = beam_search(MarkovModel(table), 4, BOS, EOS, PAD, max_length=6, num_beams=1,
                           length_penalty=length_penalty, early_stopping=True)
    assert [_strip(r) for r in beams] == [_strip(r) for r in greedy]
    for row in range(4):
        assert greedy_scores[row].item() == pytest.approx(_sequence_score(table[row], _strip(greedy[row])), rel=1e-5)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_without_early_stopping_is_exhaustive(length_penalty: float) -> None:
    vocab, max_length = 6, 4
    table = _random_table(3, vocab, seed=7)
    beams, scores = beam_search(MarkovModel(table, 64), 3, BOS, EOS, PAD, max_length=max_length, num_beams=64,
                                length_penalty=length_penalty, early_stopping=False)
    for row in range(3):
        best, best_score = _brute_force(table[row], vocab, max_length, length_penalty)
        assert _strip(beams[row]) == best
        assert scores[row].item() == pytest.approx(best_score, rel=1e-5)


def test_batched_beam_equals_one_sample_at_a_time() -> None:
    table = _random_table(5, 8, seed=11)
    together, together_scores = beam_search(MarkovModel(table, 3), 5, BOS, EOS, PAD, max_length=7, num_beams=3)
    for row in range(5):
        alone, alone_score = beam_search(MarkovModel(table[row:row + 1], 3), 1, BOS, EOS, PAD, max_length=7, num_beams=3)
        assert _strip(together[row]) == _strip(alone[0])
        assert together_scores[row].item() == pytest.approx(alone_score[0].item())


def test_max_length_and_padding() -> None:
    table = _random_table(2, 6, seed=1)
    table[:, :, EOS] = -1e9  # never ends: every hypothesis runs to max_length
    beams, _ = beam_search(MarkovModel(table, 2), 2, BOS, EOS, PAD, max_length=3, num_beams=2)
    assert beams.shape == (2, 3) and (beams != PAD).all()
    greedy, _ = greedy_search(MarkovModel(table), 2, BOS, EOS, PAD, max_length=3)
    assert greedy.shape == (2, 3)

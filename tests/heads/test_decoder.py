"""CaptionDecoder: cached incremental decoding equals the full forward; memory padding is masked."""

from __future__ import annotations

import torch

from polyfuse.heads.decoder import CaptionDecoder, DecoderStepper


def _decoder() -> CaptionDecoder:
    torch.manual_seed(0)
    return CaptionDecoder(vocab_size=11, dim=16, memory_dim=12, depth=2, heads=2, mlp_ratio=2.0, max_positions=10).eval()


def test_kv_cache_equals_full_forward() -> None:
    decoder = _decoder()
    memory = torch.randn(3, 5, 12)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    tokens = torch.randint(0, 11, (3, 7))
    full = decoder(tokens, memory, mask)
    stepper = DecoderStepper(decoder, memory, mask)
    steps = torch.stack([stepper.step(tokens[:, t:t + 1]) for t in range(7)], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_causal_future_tokens_change_nothing() -> None:
    decoder = _decoder()
    memory = torch.randn(2, 4, 12)
    tokens = torch.randint(0, 11, (2, 6))
    changed = tokens.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % 11
    torch.testing.assert_close(decoder(tokens, memory)[:, :4], decoder(changed, memory)[:, :4])


def test_padded_memory_positions_change_nothing() -> None:
    decoder = _decoder()
    memory = torch.randn(2, 5, 12)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    tokens = torch.randint(0, 11, (2, 4))
    changed = memory.clone()
    changed[0, 3:] = 100.0
    torch.testing.assert_close(decoder(tokens, memory, mask), decoder(tokens, changed, mask))


def test_beam_copies_and_reorder_keep_rows_consistent() -> None:
    decoder = _decoder()
    memory = torch.randn(2, 3, 12)
    stepper = DecoderStepper(decoder, memory, copies=3)
    first = stepper.step(torch.full((6, 1), 2))
    torch.testing.assert_close(first[0], first[2])          # beams of sample 0 agree before diverging
    torch.testing.assert_close(first[3], first[5])
    stepper.reorder(torch.tensor([3, 3, 3, 0, 0, 0]))        # swap the samples
    second = stepper.step(torch.full((6, 1), 5))
    reference = DecoderStepper(decoder, memory[[1, 0]])
    reference.step(torch.full((2, 1), 2))
    torch.testing.assert_close(second[[0, 3]], reference.step(torch.full((2, 1), 5)), atol=1e-5, rtol=1e-5)


def test_too_long_input_is_reported() -> None:
    decoder = _decoder()
    try:
        decoder(torch.zeros(1, 11, dtype=torch.long), torch.randn(1, 2, 12))
    except ValueError as error:
        assert "max_positions" in str(error)
    else:
        raise AssertionError("expected a length error")

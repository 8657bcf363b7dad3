"""Batched greedy and beam-search decoding for any model that steps with a cache."""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import Tensor

__all__ = ["StepModel", "greedy_search", "beam_search"]


class StepModel(Protocol):
    """What decoding needs: ``step(tokens (N, 1)) -> logits (N, V)`` extending an internal cache, and
    ``reorder(index (N,))`` keeping the cache rows of the continuing hypotheses."""

    def step(self, tokens: Tensor) -> Tensor: ...

    def reorder(self, index: Tensor) -> None: ...


def _pad_sequences(rows: list[Tensor], pad_id: int, device: torch.device) -> Tensor:
    longest = max([row.numel() for row in rows] + [1])
    out = torch.full((len(rows), longest), pad_id, dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        out[i, :row.numel()] = row
    return out


@torch.no_grad()
def greedy_search(model: StepModel, batch_size: int, bos_id: int, eos_id: int, pad_id: int, max_length: int,
                  device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Pick the most probable token at every step until ``eos_id`` or ``max_length`` new tokens.

    Returns ``(sequences (B, T), scores (B,))``: the generated tokens (without BOS, with EOS, padded
    with ``pad_id`` after it) and their summed log-probabilities.
    """
    last = torch.full((batch_size, 1), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    scores = torch.zeros(batch_size, device=device)
    generated = []
    for _ in range(max_length):
        log_probs = model.step(last).float().log_softmax(dim=-1)
        best = log_probs.argmax(dim=-1)
        scores += torch.where(finished, 0.0, log_probs.gather(1, best[:, None]).squeeze(1))
        best = best.masked_fill(finished, pad_id)
        generated.append(best)
        finished |= best == eos_id
        last = best[:, None]
        if bool(finished.all()):
            break
    sequences = torch.stack(generated, dim=1) if generated else torch.empty(batch_size, 0, dtype=torch.long)
    return sequences, scores


@torch.no_grad()
def beam_search(model: StepModel, batch_size: int, bos_id: int, eos_id: int, pad_id: int, max_length: int,
                num_beams: int = 3, length_penalty: float = 1.0, early_stopping: bool = True,
                device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Batched beam search; ``model`` holds ``batch_size * num_beams`` rows (beams of a sample adjacent).

    A hypothesis is scored by ``sum log p / length ** length_penalty`` (``length`` = generated tokens,
    EOS included; GNMT-style normalisation as in Hugging Face ``generate``: ``> 0`` favours longer
    sequences, ``0`` none). Each step keeps the ``num_beams`` best continuations among the ``2 x
    num_beams`` best candidates; a candidate ending in EOS among the top ``num_beams`` becomes a
    finished hypothesis. A sample stops when it has ``num_beams`` finished hypotheses and either
    ``early_stopping`` or no running beam can still beat the worst of them (an exact bound, so
    with ``early_stopping=False`` and enough beams the search is exhaustive). Hypotheses still
    running at ``max_length`` are finished as they are. With ``num_beams=1`` and
    ``early_stopping=True`` (or ``length_penalty=0``) the result is the greedy one.

    Returns ``(sequences (B, T), scores (B,))``: the best hypothesis per sample (without BOS, padded
    with ``pad_id``) and its normalised score.
    """
    k = num_beams
    if k < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")

    def normalised(score: float, length: int) -> float:
        return score / (length ** length_penalty)

    beam_scores = torch.full((batch_size, k), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0
    tokens = torch.full((batch_size * k, 1), bos_id, dtype=torch.long, device=device)
    finished: list[list[tuple[float, Tensor]]] = [[] for _ in range(batch_size)]
    done = [False] * batch_size
    for step in range(max_length):
        log_probs = model.step(tokens[:, -1:]).float().log_softmax(dim=-1)
        vocab = log_probs.shape[-1]
        candidates = (beam_scores.view(-1, 1) + log_probs).view(batch_size, k * vocab)
        top_scores, top_ids = candidates.topk(min(2 * k, k * vocab), dim=1)
        next_scores = torch.full((batch_size, k), float("-inf"), device=device)
        next_beams = torch.zeros((batch_size, k), dtype=torch.long, device=device)
        next_tokens = torch.full((batch_size, k), pad_id, dtype=torch.long, device=device)
        top_scores_list, top_ids_list = top_scores.tolist(), top_ids.tolist()
        for b in range(batch_size):
            if done[b]:
                continue
            slot = 0
            for rank, (score, index) in enumerate(zip(top_scores_list[b], top_ids_list[b])):
                if score == float("-inf"):
                    break
                beam, token = divmod(index, vocab)
                if token == eos_id:
                    if rank < k:  # only an EOS among the k best ends a hypothesis (as Hugging Face)
                        sequence = torch.cat([tokens[b * k + beam, 1:], tokens.new_tensor([eos_id])])
                        finished[b].append((normalised(score, step + 1), sequence))
                        finished[b].sort(key=lambda item: -item[0])
                        del finished[b][k:]
                    continue
                next_scores[b, slot], next_beams[b, slot], next_tokens[b, slot] = score, beam, token
                slot += 1
                if slot == k:
                    break
            if len(finished[b]) == k:
                best_running = float(next_scores[b].max())
                if early_stopping or best_running == float("-inf"):
                    done[b] = True
                else:  # the best a running beam can still reach: its score spread over the most favourable length
                    length = max_length if length_penalty > 0 else step + 2
                    done[b] = finished[b][-1][0] >= normalised(best_running, length)
        rows = (torch.arange(batch_size, device=device)[:, None] * k + next_beams).view(-1)
        tokens = torch.cat([tokens.index_select(0, rows), next_tokens.view(-1, 1)], dim=1)
        model.reorder(rows)
        beam_scores = next_scores
        if all(done):
            break
    for b in range(batch_size):  # hypotheses still running at the length limit
        if done[b]:
            continue
        for beam in range(k):
            score = float(beam_scores[b, beam])
            if score != float("-inf"):
                finished[b].append((normalised(score, tokens.shape[1] - 1), tokens[b * k + beam, 1:]))
        finished[b].sort(key=lambda item: -item[0])
    best = [hypotheses[0] if hypotheses else (float("-inf"), tokens.new_empty(0)) for hypotheses in finished]
    return _pad_sequences([seq for _, seq in best], pad_id, device), torch.tensor([s for s, _ in best], device=device)


def decoding_function(num_beams: int) -> Callable[..., tuple[Tensor, Tensor]]:
    """:func:`greedy_search` for one beam, else :func:`beam_search`."""
    return greedy_search if num_beams == 1 else beam_search

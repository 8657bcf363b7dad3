"""Tutorial: use a polyfuse fusion in your own model.

You have your own encoders and your own training loop; you want a fusion module that copes with a
modality missing for some samples. polyfuse's fusions take plain tensors (or
``polyfuse.batch.Encoded`` when you have padding or missing samples) and return a
``FusionOutput`` whose ``pooled`` vector feeds your head.

The toy task: a class is encoded in a 1-D "sensor" signal (a sine whose frequency is the class) and
in a token sequence of variable length (a noisy token copy of the class). Each modality alone is
enough most of the time, and for a third of the samples one of the two is missing.

Run it: ``python docs/tutorials/own_model_fusion.py`` (``--steps 20`` for a quick check).
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

from polyfuse import fusion
from polyfuse.batch import Encoded
from polyfuse.fusion import CrossAttentionFusion

NUM_CLASSES, VOCAB, SIGNAL_LENGTH, MAX_TOKENS = 4, 16, 64, 12


# --- 1. Your data: plain tensors, a padding mask for the tokens, a presence flag per modality ----
def make_batch(batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
    labels = torch.randint(NUM_CLASSES, (batch_size,), generator=generator)
    time = torch.linspace(0, 1, SIGNAL_LENGTH)
    signal = torch.sin(2 * torch.pi * (labels[:, None] + 1) * time) + 0.5 * torch.randn(
        batch_size, SIGNAL_LENGTH, generator=generator)
    lengths = torch.randint(3, MAX_TOKENS + 1, (batch_size,), generator=generator)
    tokens = torch.randint(NUM_CLASSES, VOCAB, (batch_size, MAX_TOKENS), generator=generator)  # distractors
    clue = torch.rand(batch_size, MAX_TOKENS, generator=generator) < 0.3
    tokens = torch.where(clue, labels[:, None], tokens)  # the class id shows up among the tokens
    token_mask = torch.arange(MAX_TOKENS)[None] < lengths[:, None]  # (B, L) True = real token
    # a third of the samples lose one modality: signal for some, tokens for others, never both
    drop = torch.rand(batch_size, generator=generator)
    signal_present, tokens_present = drop >= 1 / 6, (drop < 1 / 6) | (drop >= 1 / 3)
    return {"labels": labels, "signal": signal, "tokens": tokens, "token_mask": token_mask,
            "signal_present": signal_present, "tokens_present": tokens_present}


# --- 2. Your encoders: anything that returns (B, L, D) or (B, D) -----------------------------
class SignalEncoder(nn.Module):
    """``(B, T)`` signal -> ``(B, T / 4, 32)`` tokens with a small 1-D CNN."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(1, dim, 5, stride=2, padding=2), nn.GELU(),
                                 nn.Conv1d(dim, dim, 5, stride=2, padding=2), nn.GELU())

    def forward(self, signal: Tensor) -> Tensor:
        return self.net(signal[:, None]).transpose(1, 2)


class TokenEncoder(nn.Module):
    """``(B, L)`` token ids -> ``(B, L, 24)`` with an embedding and a GRU."""

    def __init__(self, dim: int = 24) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.rnn = nn.GRU(dim, dim, batch_first=True)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.rnn(self.embed(tokens))[0]


# --- 3. Your model: encoders -> polyfuse fusion -> your head --------------------------------
class MyModel(nn.Module):
    def __init__(self, fusion_module: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.signal_encoder, self.token_encoder = SignalEncoder(), TokenEncoder()
        self.fusion = fusion_module
        self.head = nn.Linear(out_dim, NUM_CLASSES)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        inputs = {
            # no padding in the signal; `present` marks the samples that have it at all
            "signal": Encoded(self.signal_encoder(batch["signal"]), present=batch["signal_present"]),
            # padded tokens: the mask says which are real. Absent samples' values are ignored.
            "tokens": Encoded(self.token_encoder(batch["tokens"]), mask=batch["token_mask"],
                              present=batch["tokens_present"]),
        }
        return self.head(self.fusion(inputs).pooled)  # FusionOutput.pooled: (B, out_dim)


def train(model: nn.Module, steps: int, batch_size: int, seed: int) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(steps):
        batch = make_batch(batch_size, generator)
        loss = nn.functional.cross_entropy(model(batch), batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, batch: dict[str, Tensor], **presence: Tensor) -> float:
    model.eval()
    predictions = model({**batch, **presence}).argmax(-1)
    return (predictions == batch["labels"]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-size", type=int, default=1000, help="test samples")
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    dims, out_dim = {"signal": 32, "tokens": 24}, 64
    models = {
        # the class directly: the token sequence queries the signal's tokens
        "cross_attention": MyModel(CrossAttentionFusion(dims, out_dim, query="tokens", depth=1, heads=2), out_dim),
        # or any registered fusion by name (fusion.available() lists them)
        "concat": MyModel(fusion.build("concat", dims=dims, out_dim=out_dim), out_dim),
    }
    test = make_batch(args.test_size, torch.Generator().manual_seed(args.seed + 1))
    everything, nothing = torch.ones(args.test_size, dtype=torch.bool), torch.zeros(args.test_size, dtype=torch.bool)
    print(f"{'fusion':<16} {'first loss':>10} {'last loss':>10} {'acc: both':>10} {'signal only':>12} "
          f"{'tokens only':>12}")
    for name, model in models.items():
        losses = train(model, args.steps, args.batch_size, args.seed)
        tail = sum(losses[-10:]) / len(losses[-10:])
        both = accuracy(model, test, signal_present=everything, tokens_present=everything)
        signal_only = accuracy(model, test, signal_present=everything, tokens_present=nothing)
        tokens_only = accuracy(model, test, signal_present=nothing, tokens_present=everything)
        print(f"{name:<16} {losses[0]:>10.3f} {tail:>10.3f} {both:>10.1%} {signal_only:>12.1%} {tokens_only:>12.1%}")


if __name__ == "__main__":
    main()

"""No module sets an attribute on itself or on another module during ``forward`` (issue 24, item 2).

Per-call state on modules (``block.keep_attention`` / ``block.last_attention`` before) breaks under
``torch.compile``, activation checkpointing and concurrent use; attention maps are return values.
Every registered fusion and every encoder runs, in training and in eval mode and with its attention
maps requested, while ``nn.Module.__setattr__`` is recorded and each module's ``vars()`` compared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from polyfuse import fusion
from polyfuse.attention import using_backend
from polyfuse.batch import Encoded, ModalityInput
from polyfuse.encoders import (AudioCNNEncoder, CLIPTextEncoder, MobileNetV2Encoder, TextTransformerEncoder,
                               ViTEncoder)

DIMS = {"image": 12, "audio": 8, "text": 16}
PRESENT = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 1]], dtype=torch.bool)


def _state(root: nn.Module) -> dict[str, dict[str, int]]:
    """Identity of every attribute (and of every parameter, buffer and child) of every module."""
    state = {}
    for name, module in root.named_modules():
        entries = {key: id(value) for key, value in vars(module).items()}
        for group in ("_parameters", "_buffers", "_modules"):
            entries.update({f"{group}.{key}": id(value) for key, value in getattr(module, group).items()})
        state[name or "<root>"] = entries
    return state


@contextmanager
def _no_attribute_writes(root: nn.Module, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    writes: list[str] = []
    original = nn.Module.__setattr__

    def recording(module: nn.Module, name: str, value: object) -> None:
        writes.append(f"{type(module).__name__}.{name}")
        original(module, name, value)

    before = _state(root)
    with monkeypatch.context() as patch:
        patch.setattr(nn.Module, "__setattr__", recording)
        yield
    assert not writes, f"{type(root).__name__}: attributes set during forward: {sorted(set(writes))}"
    after = _state(root)
    changed = sorted(name for name in before if before[name] != after.get(name))
    assert not changed, f"{type(root).__name__}: module state changed during forward in {changed}"


def _check(module: nn.Module, run: Callable[[], object], monkeypatch: pytest.MonkeyPatch) -> None:
    for training in (True, False):
        module.train(training)
        with _no_attribute_writes(module, monkeypatch), torch.set_grad_enabled(training):
            run()


def _tokens_mask(batch: int, length: int) -> torch.Tensor:
    return torch.arange(length)[None, :] < torch.tensor([length, length - 2, 1][:batch])[:, None]


ENCODERS: dict[str, Callable[[], tuple[nn.Module, ModalityInput]]] = {
    "vit": lambda: (ViTEncoder(image_size=8, patch_size=4, in_chans=1, dim=8, depth=2, heads=2),
                    ModalityInput(torch.randn(3, 1, 8, 8), None, PRESENT[:, 0])),
    "text": lambda: (TextTransformerEncoder(vocab_size=20, max_length=6, dim=8, depth=2, heads=2),
                     ModalityInput(torch.randint(1, 20, (3, 6)), _tokens_mask(3, 6), PRESENT[:, 1])),
    "clip_text": lambda: (CLIPTextEncoder(vocab_size=20, context_length=6, dim=8, depth=2, heads=2),
                          ModalityInput(torch.randint(1, 20, (3, 6)), _tokens_mask(3, 6))),
    "audio_cnn": lambda: (AudioCNNEncoder(channels=(4, 8)), ModalityInput(torch.randn(3, 800), _tokens_mask(3, 800))),
    "mobilenet": lambda: (MobileNetV2Encoder(in_chans=3, width_mult=0.25), ModalityInput(torch.randn(3, 3, 32, 32))),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoders_keep_no_state_in_forward(name, monkeypatch):
    torch.manual_seed(0)
    with using_backend("sdpa"):
        encoder, inputs = ENCODERS[name]()

    def run() -> None:
        encoder(inputs)
        if hasattr(encoder, "encode_with_attention"):
            _, _, maps = encoder.encode_with_attention(inputs.values, inputs.mask)
            assert len(maps) == len(encoder.blocks)

    _check(encoder, run, monkeypatch)


@pytest.mark.parametrize("name", fusion.available())
def test_fusions_keep_no_state_in_forward(name, monkeypatch):
    torch.manual_seed(0)
    with using_backend("sdpa"):
        module = fusion.build(name, dims=DIMS, out_dim=16)
    inputs = {m: Encoded(torch.randn(3, 4, d), _tokens_mask(3, 4), PRESENT[:, i].clone())
              for i, (m, d) in enumerate(DIMS.items())}
    _check(module, lambda: module(inputs, return_attention=True), monkeypatch)


def test_the_check_catches_a_module_that_keeps_state(monkeypatch):
    class Remembers(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.last = x
            return x

    module = Remembers()
    with pytest.raises(AssertionError, match=r"attributes set during forward: \['Remembers.last'\]"):
        _check(module, lambda: module(torch.ones(1)), monkeypatch)

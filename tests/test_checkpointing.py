"""One activation-checkpointing mechanism (:mod:`polyfuse.checkpointing`) for encoders, fusions and decoders:
gradients unchanged, and each switched block really runs its forward again during backward."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from polyfuse.batch import Encoded, ModalityInput
from polyfuse.checkpointing import checkpointed, checkpointing_enabled, set_grad_checkpointing
from polyfuse.encoders import AudioCNNEncoder, CLIPTextEncoder, TextTransformerEncoder, ViTEncoder
from polyfuse.fusion.early import EarlyFusion
from polyfuse.heads.decoder import CaptionDecoder


def count_forwards(blocks: list[nn.Module]) -> list[int]:
    """A live list: ``counts[i]`` = calls of ``blocks[i]``, counted by a forward *pre*-hook (the
    recomputation in backward stops as soon as the saved tensors are back, before forward hooks)."""
    counts = [0] * len(blocks)
    for index, block in enumerate(blocks):
        block.register_forward_pre_hook(lambda *_, index=index: counts.__setitem__(index, counts[index] + 1))
    return counts


def vit() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor], list[nn.Module]]:
    model = ViTEncoder(image_size=8, patch_size=4, in_chans=1, dim=16, depth=2, heads=2, output="pooled")
    images = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, lambda m: m(images).tokens, model.checkpoint_blocks()


def text(kind: type) -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor], list[nn.Module]]:
    if kind is CLIPTextEncoder:
        model = CLIPTextEncoder(vocab_size=20, context_length=6, dim=16, depth=2, heads=2, output="tokens")
    else:
        model = TextTransformerEncoder(vocab_size=20, max_length=6, dim=16, depth=2, heads=2, dropout=0.1)
    ids = torch.randint(1, 20, (3, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.arange(6)[None] < torch.tensor([[6], [4], [2]])
    return model, lambda m: m(ModalityInput(ids, mask)).pooled(), model.checkpoint_blocks()


def decoder() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor], list[nn.Module]]:
    model = CaptionDecoder(vocab_size=11, dim=16, memory_dim=12, depth=2, heads=2, mlp_ratio=2.0, max_positions=8)
    tokens = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(1))
    memory = torch.randn(3, 4, 12, generator=torch.Generator().manual_seed(2))
    return model, lambda m: m(tokens, memory, torch.ones(3, 4, dtype=torch.bool)), model.checkpoint_blocks()


CASES = {"vit": vit, "bert": lambda: text(TextTransformerEncoder), "clip_text": lambda: text(CLIPTextEncoder),
         "caption_decoder": decoder}


def grads_and_counts(make: Callable, enable: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[int]]:
    torch.manual_seed(0)
    model, run, blocks = make()
    set_grad_checkpointing(model, enable)
    counts = count_forwards(blocks)
    torch.manual_seed(3)                          # same dropout draws (checkpoint replays the RNG state)
    out = run(model.train())
    out.square().sum().backward()
    return out.detach(), {n: p.grad for n, p in model.named_parameters()}, counts


@pytest.mark.parametrize("name", list(CASES))
def test_checkpointing_recomputes_every_block_and_keeps_gradients(name):
    out, grads, counts = grads_and_counts(CASES[name], enable=False)
    ck_out, ck_grads, ck_counts = grads_and_counts(CASES[name], enable=True)
    assert counts == [1] * len(counts) and ck_counts == [2] * len(counts), (counts, ck_counts)
    torch.testing.assert_close(ck_out, out)
    for param, grad in grads.items():
        assert grad is not None, param
        torch.testing.assert_close(ck_grads[param], grad, msg=param)


@pytest.mark.parametrize("name", list(CASES))
def test_no_recomputation_in_eval_or_without_grad(name):
    model, run, blocks = CASES[name]()
    set_grad_checkpointing(model)
    counts = count_forwards(blocks)
    with torch.no_grad():
        run(model.train())
    run(model.eval()).sum().backward()
    assert counts == [2] * len(blocks)
    assert not any("forward" in vars(module) for module in model.modules())      # nothing patched


def test_encoder_switch_is_its_blocks_switch():
    encoder = ViTEncoder(image_size=8, patch_size=4, in_chans=1, dim=16, depth=2, heads=2, grad_checkpointing=True)
    assert encoder.grad_checkpointing and checkpointing_enabled(encoder)
    assert all(block.grad_checkpointing for block in encoder.blocks)
    encoder.grad_checkpointing = False
    assert not any(block.grad_checkpointing for block in encoder.blocks) and not encoder.grad_checkpointing


def test_a_module_without_checkpointable_blocks_is_named():
    with pytest.raises(ValueError, match="AudioCNNEncoder runs no block that can be checkpointed"):
        AudioCNNEncoder(channels=[4], convs_per_block=1).grad_checkpointing = True


def test_a_plain_module_is_its_own_block():
    block = nn.Linear(4, 4)
    assert set_grad_checkpointing(block) == [block] and checkpointing_enabled(block)
    counts = count_forwards([block])
    checkpointed(block, torch.randn(2, 4)).sum().backward()
    assert counts == [2]


def test_fusion_blocks_are_checkpointed_by_their_loop():
    torch.manual_seed(0)
    fusion = EarlyFusion({"a": 8, "b": 8}, out_dim=8, width=8, depth=2, heads=2).train()
    for block in fusion.blocks:
        set_grad_checkpointing(block)
    counts = count_forwards(list(fusion.blocks))
    inputs = {m: Encoded(torch.randn(2, 3, 8, requires_grad=True)) for m in ("a", "b")}
    fusion(inputs).pooled.sum().backward()
    assert counts == [2, 2]

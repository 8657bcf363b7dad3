"""ContrastiveLoss: parity with open_clip's ClipLoss, single process and with a simulated world of 2."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from polyfuse.losses import ContrastiveLoss
from .fake_world import fake_world


def _features(n: int = 8, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    b = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    return a, b


@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_equals_open_clip_single_process(scale: float) -> None:
    a, b = _features()
    ours = ContrastiveLoss()(a, b, torch.tensor(scale))
    reference = ClipLoss()(a, b, torch.tensor(scale))
    torch.testing.assert_close(ours, reference)


def test_gradients_equal_open_clip() -> None:
    a, b = _features()
    grads = []
    for loss_fn in (ContrastiveLoss(), ClipLoss()):
        a_, b_ = a.clone().requires_grad_(), b.clone().requires_grad_()
        scale = torch.tensor(10.0, requires_grad=True)
        loss_fn(a_, b_, scale).backward()
        grads.append((a_.grad, b_.grad, scale.grad))
    for ours, reference in zip(*grads):
        torch.testing.assert_close(ours, reference)


def test_valid_mask_equals_loss_on_the_valid_subset() -> None:
    a, b = _features(10)
    valid = torch.tensor([True, False, True, True, False, True, True, True, False, True])
    masked = ContrastiveLoss()(a, b, 20.0, valid=valid)
    subset = ContrastiveLoss()(a[valid], b[valid], 20.0)
    torch.testing.assert_close(masked, subset)


def test_no_valid_pair_gives_zero_not_nan() -> None:
    a, b = _features(4)
    a.requires_grad_()
    loss = ContrastiveLoss()(a, b, 10.0, valid=torch.zeros(4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(a.grad).all()


def test_perfect_alignment_gives_small_loss() -> None:
    a, _ = _features(6, 32)
    assert ContrastiveLoss()(a, a, 100.0).item() < 1e-3


@pytest.mark.parametrize("local_loss,gather_with_grad", list(itertools.product([False, True], [False, True])))
@pytest.mark.parametrize("rank", [0, 1])
def test_simulated_world_of_two_equals_open_clip(monkeypatch, local_loss: bool, gather_with_grad: bool,
                                                  rank: int) -> None:
    """A monkeypatched all-gather drives both implementations as rank ``rank`` of 2."""
    full_a, full_b = _features(12)
    fake_world(monkeypatch, rank, [full_a, full_b])
    n = 6
    results = []
    for loss_fn in (ContrastiveLoss(local_loss, gather_with_grad, rank=rank, world_size=2),
                    ClipLoss(local_loss, gather_with_grad, rank=rank, world_size=2)):
        a = full_a[rank * n:(rank + 1) * n].clone().requires_grad_()
        b = full_b[rank * n:(rank + 1) * n].clone().requires_grad_()
        loss = loss_fn(a, b, torch.tensor(12.0))
        loss.backward()
        results.append((loss.detach(), a.grad, b.grad))
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference)
    if not local_loss:  # every rank computes the loss of the whole global batch
        torch.testing.assert_close(results[0][0], ContrastiveLoss()(full_a, full_b, 12.0))

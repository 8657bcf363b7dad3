"""SigLipLoss: parity with open_clip's SigLipLoss, single process and with a simulated world of 2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import SigLipLoss as OpenClipSigLipLoss

from polyfuse.losses import SigLipLoss

from .fake_world import fake_world


def _features(n: int = 8, dim: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, dim, generator=g), dim=-1),
            F.normalize(torch.randn(n, dim, generator=g), dim=-1))


@pytest.mark.parametrize("scale,bias", [(10.0, -10.0), (1.0, 0.0), (30.0, -5.0)])
def test_equals_open_clip_single_process(scale: float, bias: float) -> None:
    a, b = _features()
    grads = []
    for loss_fn in (SigLipLoss(), OpenClipSigLipLoss()):
        a_, b_ = a.clone().requires_grad_(), b.clone().requires_grad_()
        s, t = torch.tensor(scale, requires_grad=True), torch.tensor(bias, requires_grad=True)
        loss = loss_fn(a_, b_, s, t)
        loss.backward()
        grads.append((loss.detach(), a_.grad, b_.grad, s.grad, t.grad))
    for ours, reference in zip(*grads):
        torch.testing.assert_close(ours, reference)


def test_valid_mask_equals_loss_on_the_valid_subset() -> None:
    a, b = _features(9)
    valid = torch.tensor([True, True, False, True, False, True, True, True, True])
    torch.testing.assert_close(SigLipLoss()(a, b, 10.0, -10.0, valid=valid),
                               SigLipLoss()(a[valid], b[valid], 10.0, -10.0))


@pytest.mark.parametrize("rank", [0, 1])
def test_simulated_world_of_two_equals_open_clip_gather(monkeypatch, rank: int) -> None:
    full_a, full_b = _features(10)
    fake_world(monkeypatch, rank, [full_a, full_b])
    n = 5
    results = []
    for loss_fn in (SigLipLoss(rank=rank, world_size=2),
                    OpenClipSigLipLoss(rank=rank, world_size=2, dist_impl="gather")):
        a = full_a[rank * n:(rank + 1) * n].clone().requires_grad_()
        b = full_b[rank * n:(rank + 1) * n].clone().requires_grad_()
        loss = loss_fn(a, b, torch.tensor(10.0), torch.tensor(-10.0))
        loss.backward()
        results.append((loss.detach(), a.grad, b.grad))
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference)


def test_ring_exchange_in_one_process_is_the_plain_loss_and_a_bad_choice_is_named() -> None:
    a, b = _features(6)
    valid = torch.tensor([True, False, True, True, True, True])
    for mask in (None, valid):
        torch.testing.assert_close(SigLipLoss(exchange="ring")(a, b, 10.0, -10.0, valid=mask),
                                   SigLipLoss()(a, b, 10.0, -10.0, valid=mask))
    with pytest.raises(ValueError, match="exchange must be 'gather' or 'ring'"):
        SigLipLoss(exchange="allgather")

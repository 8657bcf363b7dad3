"""Contrastive losses in a real 2-process gloo group (CPU), against the single-process global batch
and against open_clip run in the same group."""

from __future__ import annotations

import pytest
import torch

from polyfuse.losses import ContrastiveLoss, SigLipLoss

from ..distributed.harness import run_ranks
from . import ddp_worker

WORLD_SIZE = 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    # generous: starting two interpreters on a loaded CI machine takes time
    run_ranks(ddp_worker, [(rank, WORLD_SIZE, out / "init", out) for rank in range(WORLD_SIZE)], timeout=600)
    return [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


def _global_reference(loss_fn, with_bias: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, b = ddp_worker.global_features()
    a.requires_grad_()
    b.requires_grad_()
    scale = torch.tensor(ddp_worker.SCALE)
    loss = loss_fn(a, b, scale, torch.tensor(ddp_worker.BIAS)) if with_bias else loss_fn(a, b, scale)
    loss.backward()
    return loss.detach(), a.grad, b.grad


def _rows(rank: int) -> slice:
    return slice(rank * ddp_worker.BATCH_PER_RANK, (rank + 1) * ddp_worker.BATCH_PER_RANK)


@pytest.mark.slow
@pytest.mark.parametrize("local_loss", [False, True])
@pytest.mark.parametrize("with_grad", [False, True])
def test_contrastive_matches_open_clip_in_the_same_group(ranks, local_loss: bool, with_grad: bool) -> None:
    key = f"clip-local{int(local_loss)}-grad{int(with_grad)}"
    for result in ranks:
        for ours, reference in zip(result[f"polyfuse-{key}"], result[f"open_clip-{key}"]):
            torch.testing.assert_close(ours, reference)


@pytest.mark.slow
@pytest.mark.parametrize("local_loss", [False, True])
def test_contrastive_gradient_is_the_global_batch_gradient(ranks, local_loss: bool) -> None:
    """With grad through the gather, each rank's features get world_size x the global-batch gradient
    (DDP then divides by world_size)."""
    loss, grad_a, grad_b = _global_reference(ContrastiveLoss(), with_bias=False)
    for rank, result in enumerate(ranks):
        local, local_grad_a, local_grad_b = result[f"polyfuse-clip-local{int(local_loss)}-grad1"]
        torch.testing.assert_close(local_grad_a, WORLD_SIZE * grad_a[_rows(rank)])
        torch.testing.assert_close(local_grad_b, WORLD_SIZE * grad_b[_rows(rank)])
        if not local_loss:
            torch.testing.assert_close(local, loss)
    if local_loss:  # the mean of the local losses is the global loss
        torch.testing.assert_close(sum(r["polyfuse-clip-local1-grad1"][0] for r in ranks) / WORLD_SIZE, loss)


@pytest.mark.slow
def test_contrastive_without_grad_gather_gives_the_local_share(ranks) -> None:
    loss, grad_a, grad_b = _global_reference(ContrastiveLoss(), with_bias=False)
    for rank, result in enumerate(ranks):
        local, local_grad_a, local_grad_b = result["polyfuse-clip-local0-grad0"]
        torch.testing.assert_close(local, loss)
        torch.testing.assert_close(local_grad_a, grad_a[_rows(rank)])
        torch.testing.assert_close(local_grad_b, grad_b[_rows(rank)])


@pytest.mark.slow
def test_siglip_matches_open_clip_and_the_global_batch(ranks) -> None:
    loss, grad_a, grad_b = _global_reference(SigLipLoss(), with_bias=True)
    for rank, result in enumerate(ranks):
        ours = result["polyfuse-siglip"]
        for impl in ("gather", "bidir"):
            for value, reference in zip(ours, result[f"open_clip-siglip-{impl}"]):
                torch.testing.assert_close(value, reference)
        torch.testing.assert_close(ours[1], WORLD_SIZE * grad_a[_rows(rank)])
        torch.testing.assert_close(ours[2], WORLD_SIZE * grad_b[_rows(rank)])
    torch.testing.assert_close(sum(r["polyfuse-siglip"][0] for r in ranks) / WORLD_SIZE, loss)

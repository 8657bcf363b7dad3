"""Every public loss under a plain 2-process gloo DDP script without Lightning (issue #18:
``gather_with_grad=True`` failed with ``module 'torch.distributed' has no attribute 'nn'``), and
placeholder rows spread unevenly over the ranks: DDP's averaged loss and gradients equal one
process on the global batch's valid rows."""

import pytest
import torch

from ..distributed.harness import worker_results
from . import ddp_losses_worker as worker


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return worker_results(worker, tmp_path_factory.mktemp("ddp_losses"))


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory):
    """SigLIP on 4 ranks: the ring's two-way exchange (blocks of rank +-1) and its last one-way step (+2)."""
    return worker_results(worker, tmp_path_factory.mktemp("ddp_losses_4"), 4, "siglip", "siglip_ring")


def test_the_worker_ran_without_lightning(results):
    assert results["modules"] == []
    assert set(results["cases"]) == {f"{loss}/{validity}" for loss, validity in worker.CASES}
    assert "bidir_grads" not in results["cases"]  # two ranks: one-way exchange only


@pytest.mark.slow
@pytest.mark.parametrize("loss_name, validity", worker.CASES)
def test_ddp_loss_and_gradients_equal_one_process_on_the_valid_global_batch(results, loss_name, validity):
    x_a, x_b = worker.global_inputs()
    flags = worker.VALIDITY[validity]
    keep = slice(None) if flags is None else torch.tensor(flags)
    loss, grads = worker.loss_and_grads(loss_name, x_a[keep], x_b[keep], None, rank=0, world_size=1)
    ddp = results["cases"][f"{loss_name}/{validity}"]
    assert abs(ddp["loss"] - float(loss)) < 1e-6
    if loss_name == "clip_local_nograd":
        # local rows without gradient through the gather: the value is the global one, the gradient is
        # not the global-batch gradient (open_clip's documented caveat); it must still be finite
        assert all(torch.isfinite(grad).all() for grad in ddp["grads"].values())
        return
    for name, grad in grads.items():
        expected = grad
        if loss_name.endswith("nograd") and name in ("w_a", "w_b"):
            # no gradient through other ranks' copies: the towers get 1/world_size of it (open_clip's
            # default; the temperature still gets the full gradient)
            expected = grad / worker.WORLD_SIZE
        torch.testing.assert_close(ddp["grads"][name], expected, atol=1e-6, rtol=1e-5, msg=f"{name}")


@pytest.mark.slow
@pytest.mark.parametrize("validity", list(worker.VALIDITY))
def test_siglip_ring_equals_the_gather_and_one_process_on_four_ranks(four_ranks, validity):
    x_a, x_b = worker.global_inputs()
    flags = worker.VALIDITY[validity]
    keep = slice(None) if flags is None else torch.tensor(flags)
    loss, grads = worker.loss_and_grads("siglip", x_a[keep], x_b[keep], None, rank=0, world_size=1)
    ring, gathered = four_ranks["cases"][f"siglip_ring/{validity}"], four_ranks["cases"][f"siglip/{validity}"]
    for ddp in (ring, gathered):
        assert abs(ddp["loss"] - float(loss)) < 1e-6
        for name, grad in grads.items():
            torch.testing.assert_close(ddp["grads"][name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.slow
def test_two_way_exchange_sends_each_gradient_back_to_its_sender(four_ranks):
    """Rank r weighs what it got from the right by r + 1 and from the left by 10 (r + 1): the block it sent
    left (to rank r - 1, who got it from its right) gets r; the one sent right gets 10 (r + 2)."""
    world = len(four_ranks["cases"]["bidir_grads"])
    for rank, (grad_left, grad_right) in enumerate(four_ranks["cases"]["bidir_grads"]):
        assert grad_left == [float((rank - 1) % world + 1)] * 2
        assert grad_right == [float(10 * ((rank + 1) % world + 1))] * 2

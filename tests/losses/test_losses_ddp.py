"""Every public loss under a plain 2-process gloo DDP script without Lightning (issue #18:
``gather_with_grad=True`` failed with ``module 'torch.distributed' has no attribute 'nn'``), and
placeholder rows spread unevenly over the ranks: DDP's averaged loss and gradients equal one
process on the global batch's valid rows."""

import pytest
import torch

from ..distributed.harness import run_worker, tail
from . import ddp_losses_worker as worker


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_losses")
    proc = run_worker(worker, out, timeout=240)
    path = out / "results.pt"
    assert proc.returncode == 0 and path.is_file(), tail(proc.stdout + proc.stderr)
    return torch.load(path, weights_only=False)


def test_the_worker_ran_without_lightning(results):
    assert results["modules"] == []
    assert set(results["cases"]) == {f"{loss}/{validity}" for loss, validity in worker.CASES}


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

"""2 processes (Lightning DDP, gloo, CPU) with per-rank batch b compute what 1 process computes on
the global batch 2b: contrastive loss, gradients of every parameter, retrieval recall."""

from __future__ import annotations

import pytest
import torch

from polyfuse.attention import get_default_backend, set_default_backend

from . import contrastive_worker as worker

TOLERANCE = dict(rtol=1e-4, atol=1e-6)  # fp32; reductions run in a different order


@pytest.fixture(autouse=True)
def sdpa_backend():
    """The workers' backend (``auto`` would time backends, and may pick another one per process)."""
    previous = get_default_backend()
    set_default_backend("sdpa")
    yield
    set_default_backend(previous)


def _single_process(local_loss: bool, gather_with_grad: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model = worker.TwoTower(local_loss, gather_with_grad)
    loss = model.loss(list(worker.synthetic_pairs(worker.WORLD_SIZE * worker.BATCH_PER_RANK, seed=1).tensors))
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize(("local_loss", "gather_with_grad"), [(False, True), (True, True)])
def test_loss_and_every_gradient_equal_the_global_batch(ranks, local_loss: bool, gather_with_grad: bool):
    loss, grads = _single_process(local_loss, gather_with_grad)
    key = f"local{int(local_loss)}-grad{int(gather_with_grad)}"
    rank_losses = torch.stack([rank[key][0] for rank in ranks])
    if local_loss:   # each rank scores its rows; their mean is the global loss
        torch.testing.assert_close(rank_losses.mean(), loss, **TOLERANCE)
    else:
        for rank_loss in rank_losses:
            torch.testing.assert_close(rank_loss, loss, **TOLERANCE)
    for rank in ranks:
        ddp_grads = rank[key][1]
        assert ddp_grads.keys() == grads.keys() and len(grads) > 20
        for name, grad in grads.items():
            torch.testing.assert_close(ddp_grads[name], grad, **TOLERANCE, msg=name)


@pytest.mark.slow
def test_without_gradient_through_the_gather_towers_get_a_world_size_smaller_gradient(ranks):
    """open_clip's default (no grad through the gather): each rank back-propagates the full loss
    into its own features only, so after DDP's average the towers' gradient is 1/world_size of the
    global one while the temperature's is exact. Documented in docs/scaling.md; polyfuse defaults
    to ``gather_with_grad=True``."""
    _, grads = _single_process(False, False)
    for rank in ranks:
        ddp_grads = rank["local0-grad0"][1]
        for name, grad in grads.items():
            expected = grad if name == "log_scale" else grad / worker.WORLD_SIZE
            torch.testing.assert_close(ddp_grads[name], expected, **TOLERANCE, msg=name)


@pytest.mark.slow
def test_retrieval_recall_over_uneven_shards_equals_single_process(load_results):
    ranks = load_results("retrieval_rank")
    model = worker.TwoTower().eval()
    images, tokens, mask = worker.synthetic_pairs(worker.EVAL_SIZE, seed=2).tensors
    with torch.no_grad():
        image, text = model.embed(images, tokens, mask)
    model.recall.update({"image": image, "text": text})
    single = {k: float(v) for k, v in model.recall.compute().items()}
    assert "image_to_text/R@1" in single and "rsum" in single
    for rank in ranks:
        assert rank.keys() == single.keys()
        for name, value in single.items():
            assert rank[name] == pytest.approx(value, abs=1e-9), name

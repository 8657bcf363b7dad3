"""Placeholder rows (Batch.valid False) leave every loss: each loss equals the loss on the valid rows
alone, invalid rows get zero gradient, non-finite garbage in them cannot leak, and a batch without
a valid row gives 0 with a graph."""

import pytest
import torch
import torch.nn.functional as F

from polyfuse.batch import Batch, ModalityInput
from polyfuse.losses import ContrastiveLoss, SigLipLoss, sequence_cross_entropy, vqa_soft_bce
from polyfuse.losses.masking import mask_rows, masked_mean, select_rows, zero_with_graph

VALID = torch.tensor([True, False, True, True, False, True])


def _leaf(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_()


def _poisoned(tensor):
    """``tensor`` with NaN / inf written into the invalid rows (what garbage could look like)."""
    bad = tensor.detach().clone()
    bad[~VALID] = float("nan")
    bad[1].view(-1)[0] = float("inf")
    return bad.requires_grad_()


def _check(loss_fn, *inputs):
    """The masked loss equals the loss on the valid rows; invalid rows get zero gradient; NaN in
    invalid rows changes nothing."""
    masked = loss_fn(*inputs, valid=VALID)
    reference = loss_fn(*[x[VALID] for x in inputs], valid=None)
    torch.testing.assert_close(masked, reference, atol=1e-6, rtol=1e-6)
    grads = torch.autograd.grad(masked, inputs[0])[0]
    assert grads[~VALID].abs().sum() == 0 and grads[VALID].abs().sum() > 0
    poisoned = (_poisoned(inputs[0]), *inputs[1:])
    value = loss_fn(*poisoned, valid=VALID)
    torch.testing.assert_close(value, reference, atol=1e-6, rtol=1e-6)
    grad = torch.autograd.grad(value, poisoned[0])[0]
    assert torch.isfinite(grad).all() and grad[~VALID].abs().sum() == 0
    none = loss_fn(*inputs, valid=torch.zeros_like(VALID))
    assert none.item() == 0.0 and none.requires_grad
    none.backward()


def test_classification_cross_entropy():
    labels = torch.tensor([0, 2, 1, 3, 0, 2])

    def loss(logits, valid):
        rows = labels if len(logits) == 6 else labels[VALID]
        per_row = F.cross_entropy(mask_rows(logits, valid), rows, label_smoothing=0.1, reduction="none")
        return masked_mean(per_row, valid)

    _check(loss, _leaf(6, 4))


def test_vqa_soft_bce():
    targets = torch.rand(6, 5, generator=torch.Generator().manual_seed(1))

    def loss(logits, valid):
        return vqa_soft_bce(logits, targets if len(logits) == 6 else targets[VALID], valid)

    _check(loss, _leaf(6, 5))
    # unmasked it is still the element mean times the vocabulary (BUTD / ViLT)
    logits = _leaf(6, 5)
    torch.testing.assert_close(vqa_soft_bce(logits, targets), F.binary_cross_entropy_with_logits(logits, targets) * 5)


def test_sequence_cross_entropy():
    targets = torch.randint(0, 7, (6, 4), generator=torch.Generator().manual_seed(2))
    targets[:, 3] = -100  # padding

    def loss(logits, valid):
        return sequence_cross_entropy(logits, targets if len(logits) == 6 else targets[VALID], -100, 0.1, valid=valid)

    _check(loss, _leaf(6, 4, 7))
    logits = _leaf(6, 4, 7)
    torch.testing.assert_close(sequence_cross_entropy(logits, targets, -100, 0.1),
                               F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100,
                                               label_smoothing=0.1))


@pytest.mark.parametrize("local_loss", [False, True])
def test_contrastive_info_nce(local_loss):
    b_features = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(3)), dim=-1)
    contrastive = ContrastiveLoss(local_loss=local_loss)

    def loss(a, valid):
        return contrastive(a, b_features if len(a) == 6 else b_features[VALID], 10.0, valid=valid)

    _check(loss, F.normalize(_leaf(6, 8), dim=-1).detach().requires_grad_())


def test_siglip():
    b_features = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(4)), dim=-1)
    siglip = SigLipLoss()

    def loss(a, valid):
        return siglip(a, b_features if len(a) == 6 else b_features[VALID], 10.0, -5.0, valid=valid)

    _check(loss, F.normalize(_leaf(6, 8), dim=-1).detach().requires_grad_())


def test_zero_with_graph_is_nan_safe():
    x = torch.tensor([1.0, float("nan"), float("inf")], requires_grad=True)
    zero = zero_with_graph(x)
    zero.backward()
    assert zero.item() == 0.0 and x.grad.tolist() == [0.0, 0.0, 0.0]


def test_select_rows_keeps_the_valid_rows_of_a_batch_and_outputs():
    valid = torch.tensor([True, False, True])
    batch = Batch({"image": ModalityInput(torch.arange(3.0).view(3, 1), present=torch.tensor([True, False, True]))},
                  targets={"label": torch.tensor([4, 5, 6])}, ids=["a", "b", "c"],
                  extras={"caption": ["x", None, "z"]}, valid=valid)
    kept = select_rows(batch, valid)
    assert kept.ids == ["a", "c"] and kept.targets["label"].tolist() == [4, 6] and kept.valid is None
    assert kept.inputs["image"].values.flatten().tolist() == [0.0, 2.0] and kept.extras["caption"] == ["x", "z"]
    outputs = {"logits": torch.ones(3, 2), "scale": torch.tensor(2.0), "generated": ["p", "q", "r"]}
    picked = select_rows(outputs, valid)
    assert picked["logits"].shape == (2, 2) and picked["scale"].item() == 2.0 and picked["generated"] == ["p", "r"]

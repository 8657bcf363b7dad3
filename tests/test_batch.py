import pytest
import torch

from polyfuse.batch import Batch, Encoded, ModalityInput


def test_encoded_accepts_pooled_vectors_and_checks_shapes():
    enc = Encoded(torch.randn(3, 8))
    assert enc.tokens.shape == (3, 1, 8)
    with pytest.raises(ValueError, match="mask must have shape"):
        Encoded(torch.randn(3, 4, 8), torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        Encoded(torch.randn(3, 4, 8), torch.ones(3, 4))
    with pytest.raises(ValueError, match="present must have shape"):
        Encoded(torch.randn(3, 4, 8), None, torch.ones(2, dtype=torch.bool))


def test_pooled_ignores_padding_and_absent_samples():
    tokens = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    present = torch.tensor([True, False])
    enc = Encoded(tokens, mask, present)
    pooled = enc.pooled()
    torch.testing.assert_close(pooled[0], tokens[0, :2].mean(0))
    assert torch.equal(pooled[1], torch.zeros(4))
    tokens2 = tokens.clone()
    tokens2[0, 2] = 100.0  # padding
    tokens2[1] = -7.0  # absent sample
    assert torch.equal(Encoded(tokens2, mask, present).pooled(), pooled)


def test_batch_to_moves_every_tensor():
    batch = Batch({"image": ModalityInput(torch.zeros(2, 1, 4, 4), None, torch.tensor([True, False]))},
                  {"label": torch.tensor([1, 2])}, ["a", "b"], {"caption": ["x", "y"]})
    moved = batch.to("meta")
    assert moved.inputs["image"].values.device.type == "meta"
    assert moved.inputs["image"].present.device.type == "meta"
    assert moved.targets["label"].device.type == "meta"
    assert moved.extras == {"caption": ["x", "y"]} and moved.ids == ["a", "b"]
    assert batch.batch_size == 2 and batch.modalities == ["image"]

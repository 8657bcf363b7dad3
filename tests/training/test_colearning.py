"""Co-learning (cross-modal distillation): the loss terms, missing teacher samples, warm-up, training integration."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from polyfuse.batch import Batch, Encoded, ModalityInput
from polyfuse.fusion.base import FusionOutput
from polyfuse.fusion.concat import ConcatFusion
from polyfuse.heads.classification import ClassificationHead
from polyfuse.models.multimodal import ModelOutput
from polyfuse.training.colearning import CrossModalDistillation
from polyfuse.training.module import PolyfuseLitModule

CLASSES = 4


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one intra-op thread (root conftest)


class VectorEncoder(nn.Module):
    def __init__(self, in_dim: int, out_dim: int = 8) -> None:
        super().__init__()
        self.linear, self.out_dim = nn.Linear(in_dim, out_dim), out_dim

    def forward(self, inputs: ModalityInput) -> Encoded:
        values = inputs.values
        if inputs.present is not None:  # like polyfuse's encoders: absent samples never reach the weights
            values = torch.where(inputs.present[:, None], values, torch.zeros_like(values))
        return Encoded(self.linear(values), present=inputs.present)


def make_batch(batch: int = 16, absent_image: tuple[int, ...] = ()) -> Batch:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, CLASSES, (batch,), generator=generator)
    image = torch.randn(batch, 6, generator=generator)
    image[:, :CLASSES] += 3 * F.one_hot(labels, CLASSES)
    present = torch.ones(batch, dtype=torch.bool)
    present[list(absent_image)] = False
    image[~present] = float("nan")
    return Batch(inputs={"image": ModalityInput(image, present=present),
                         "audio": ModalityInput(torch.randn(batch, 5, generator=generator))},
                 targets={"label": labels})


def distillation(**options) -> CrossModalDistillation:
    torch.manual_seed(0)
    return CrossModalDistillation(VectorEncoder(6), "image", CLASSES, **options)


def model_output(batch: Batch, fused_dim: int = 3) -> ModelOutput:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(batch.batch_size, CLASSES, generator=generator, requires_grad=True)
    fused = FusionOutput(pooled=torch.randn(batch.batch_size, fused_dim, generator=generator, requires_grad=True))
    return ModelOutput(encoded={}, fused=fused, outputs=logits)


def test_terms_match_an_independent_computation_on_present_teacher_samples():
    module = distillation(temperature=3.0, distill_weight=0.5, teacher_weight=2.0).train()
    batch = make_batch(absent_image=(2, 7))
    output = model_output(batch)
    losses = module(output, batch)
    keep = torch.ones(16, dtype=torch.bool)
    keep[[2, 7]] = False
    features = module.teacher_encoder(batch.inputs["image"]).tokens[:, 0]
    teacher = module.teacher_head(features)[keep]
    student = output.outputs[keep]
    p_teacher = torch.softmax(teacher / 3.0, -1)
    kl = (p_teacher * (torch.log(p_teacher) - torch.log_softmax(student / 3.0, -1))).sum(-1).mean()
    torch.testing.assert_close(losses["distill"], 0.5 * 9.0 * kl)
    torch.testing.assert_close(losses["teacher_ce"], 2.0 * F.cross_entropy(teacher, batch.targets["label"][keep]))
    assert torch.isfinite(losses["distill"]) and "feature" not in losses


def test_gradients_student_gets_distillation_teacher_gets_labels_only():
    module = distillation(feature_weight=1.0, fused_dim=3)
    batch = make_batch(absent_image=(0,))
    output = model_output(batch)
    losses = module(output, batch)
    assert set(losses) == {"teacher_ce", "distill", "feature"}
    (losses["distill"] + losses["feature"]).backward()
    assert output.outputs.grad.abs().sum() > 0 and output.fused.pooled.grad.abs().sum() > 0
    assert module.teacher_encoder.linear.weight.grad is None  # the teacher is detached in distillation
    losses = module(model_output(batch), batch)
    losses["teacher_ce"].backward()
    assert all(torch.isfinite(p.grad).all() for p in module.teacher_encoder.parameters())


def test_warmup_switches_distillation_on_after_training_steps():
    module = distillation(warmup_steps=2).train()
    batch = make_batch()
    values = [module(model_output(batch), batch)["distill"].item() for _ in range(3)]
    assert values[0] == 0.0 and values[1] == 0.0 and values[2] > 0.0
    module.eval()
    module(model_output(batch), batch)
    assert int(module.steps) == 3  # evaluation does not advance the warm-up


def test_no_teacher_sample_gives_zero_terms():
    module = distillation()
    batch = make_batch(batch=4, absent_image=(0, 1, 2, 3))
    losses = module(model_output(batch), batch)
    assert losses["teacher_ce"].item() == 0.0 and losses["distill"].item() == 0.0


def test_errors_name_the_problem():
    batch = make_batch()
    with pytest.raises(KeyError, match="data.modalities"):
        CrossModalDistillation(VectorEncoder(6), "text", CLASSES)(model_output(batch), batch)
    bad = ModelOutput(encoded={}, fused=None, outputs=torch.zeros(16, 7))
    with pytest.raises(ValueError, match="logits"):
        distillation()(bad, batch)
    with pytest.raises(ValueError, match="fused_dim"):
        distillation(feature_weight=1.0)


def test_audio_only_student_trains_with_an_image_teacher():
    """The config path: the model sees audio only; the objective owns and trains the image teacher."""
    torch.manual_seed(0)
    module = PolyfuseLitModule(
        encoders={"audio": VectorEncoder(5), "image": VectorEncoder(6)}, modalities=["audio"],
        fusion=partial(ConcatFusion, hidden=8), head=partial(ClassificationHead, num_classes=CLASSES),
        optimizer=partial(torch.optim.Adam, lr=1e-2), fusion_dim=8, scheduler=None,
        objectives={"colearning": partial(CrossModalDistillation, teacher_encoder=VectorEncoder(6), teacher="image",
                                          num_classes=CLASSES)})
    assert list(module.model.encoders) == ["audio"]
    batch = make_batch()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    first = module.auxiliary_losses(module.model(batch), batch)["colearning/teacher_ce"].item()
    for _ in range(20):
        _, loss = module._step(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert module.auxiliary_losses(module.model(batch), batch)["colearning/teacher_ce"].item() < 0.5 * first

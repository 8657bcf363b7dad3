"""Co-learning: supervise one modality's model with knowledge transferred from a stronger modality.

An auxiliary objective of :class:`~polyfuse.training.PolyfuseLitModule` (``model.objectives``; config
``configs/model/objective/colearning.yaml``). The model being trained is the *student* (e.g. an
audio-only model); this objective owns a *teacher* for another modality (its own encoder and
classifier, e.g. the image), trains it on the labels, and distils it into the student.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.batch import Batch, Encoded
from polyfuse.masking import zero_invalid

if TYPE_CHECKING:
    from polyfuse.models.multimodal import ModelOutput

__all__ = ["CrossModalDistillation"]


class CrossModalDistillation(nn.Module):
    """Cross-modal knowledge distillation from a teacher modality into the trained model.

    The teacher ``t = W_t LayerNorm(pool(E_t(x_teacher)))`` is trained online with cross-entropy on
    the labels (``teacher_ce``). The student is the model's head output (its logits ``s``); it is
    pulled towards the teacher's soft predictions,
    ``distill = T^2 KL(softmax(t / T) || softmax(s / T))`` with the teacher detached (Hinton, Vinyals &
    Dean, "Distilling the Knowledge in a Neural Network", 2015), and optionally its fused
    representation towards the teacher's (``feature``: ``1 - cos(P z_student, sg(z_teacher))``),
    the representation-level supervision transfer of Gupta, Hoffman & Malik, "Cross Modal
    Distillation for Supervision Transfer", CVPR 2016. Co-learning in the sense of Baltrusaitis,
    Ahuja & Morency (TPAMI 2019): the teacher modality is needed in training only; the student
    model is deployed without it.

    Missing modalities: the teacher terms use only the samples where the teacher modality is present
    (zero when none is); the teacher's encoder marks absent samples itself.

    Args:
        teacher_encoder: encoder of the teacher modality (e.g. the image ViT), owned and trained here.
        teacher: name of the teacher modality in ``batch.inputs``.
        num_classes: number of classes of the teacher's classifier (the student head's classes).
        dims: modality -> encoder width of the trained model (passed by the training module; unused).
        temperature: ``T``. distill_weight, teacher_weight, feature_weight: weights of the terms.
        fused_dim: width of ``output.fused.pooled`` for the feature term.
        warmup_steps: training steps before the distillation terms switch on (the online teacher
            first learns something worth transferring).
        target: name of the label in ``batch.targets``.
    """

    def __init__(self, teacher_encoder: nn.Module, teacher: str, num_classes: int,
                 dims: Mapping[str, int] | None = None, temperature: float = 2.0, distill_weight: float = 1.0,
                 teacher_weight: float = 1.0, feature_weight: float = 0.0, fused_dim: int | None = None,
                 warmup_steps: int = 0, target: str = "label") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"CrossModalDistillation temperature must be positive, got {temperature}")
        if feature_weight > 0 and not fused_dim:
            raise ValueError("CrossModalDistillation feature_weight > 0 needs fused_dim (the model's fusion width)")
        self.teacher, self.target = teacher, target
        self.teacher_encoder = teacher_encoder
        width = int(teacher_encoder.out_dim)
        self.teacher_head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, num_classes))
        self.feature_projection = nn.Linear(int(fused_dim), width) if feature_weight > 0 else None
        self.temperature = float(temperature)
        self.distill_weight, self.teacher_weight, self.feature_weight = distill_weight, teacher_weight, feature_weight
        self.warmup_steps = int(warmup_steps)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long), persistent=True)

    def teacher_outputs(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher pooled features ``(B, D)``, logits ``(B, C)`` and presence ``(B,)``."""
        if self.teacher not in batch.inputs:
            raise KeyError(f"co-learning teacher modality {self.teacher!r} is not in the batch ({batch.modalities}); "
                           f"add it to data.modalities")
        encoded: Encoded = self.teacher_encoder(batch.inputs[self.teacher])
        pooled = encoded.pooled()
        return pooled, self.teacher_head(pooled), encoded.valid_mask().any(1)

    def forward(self, output: "ModelOutput", batch: Batch) -> dict[str, Tensor]:
        """Named, weighted losses: ``teacher_ce``, ``distill`` (+ ``feature``)."""
        if self.target not in batch.targets:
            raise KeyError(f"CrossModalDistillation needs target {self.target!r}; batch has {list(batch.targets)}")
        labels = batch.targets[self.target]
        features, logits, present = self.teacher_outputs(batch)
        count = present.sum().clamp_min(1).to(logits.dtype)

        def mean_over_present(per_row: Tensor) -> Tensor:
            return zero_invalid(per_row, present).sum() / count

        losses = {"teacher_ce": self.teacher_weight
                  * mean_over_present(F.cross_entropy(logits, labels, reduction="none"))}
        active = 1.0 if int(self.steps) >= self.warmup_steps else 0.0
        if self.training:
            self.steps += 1
        student = output.outputs
        if not isinstance(student, Tensor) or student.shape != logits.shape:
            raise ValueError(f"co-learning distils class logits: the head must output (B, {logits.shape[-1]}) "
                             f"logits, got {getattr(student, 'shape', type(student))}")
        t = self.temperature
        soft_teacher = F.log_softmax(logits.detach() / t, dim=-1)
        kl = F.kl_div(F.log_softmax(student / t, dim=-1), soft_teacher, log_target=True, reduction="none").sum(-1)
        losses["distill"] = active * self.distill_weight * t * t * mean_over_present(kl)
        if self.feature_projection is not None:
            projected = self.feature_projection(output.fused.pooled)
            cosine = F.cosine_similarity(projected, features.detach(), dim=-1)
            losses["feature"] = active * self.feature_weight * mean_over_present(1.0 - cosine)
        return losses

    def extra_repr(self) -> str:
        return (f"teacher={self.teacher!r}, temperature={self.temperature}, distill_weight={self.distill_weight}, "
                f"feature_weight={self.feature_weight}, warmup_steps={self.warmup_steps}")

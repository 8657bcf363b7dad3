"""ViLT (Kim, Son & Kim, 2021) as one polyfuse class per task, as Hugging Face lays it out.

=====================  =======================================  ====================================
polyfuse class          HF class                                 head (polyfuse.heads)
=====================  =======================================  ====================================
:class:`ViLTModel`      ``ViltModel`` (``ViltForMaskedLM`` loads)  :class:`PooledOutputHead`
:class:`ViLTForVQA`     ``ViltForQuestionAnswering``             :class:`~polyfuse.heads.VQAHead`
:class:`ViLTForNLVR2`   ``ViltForImagesAndTextClassification``   :class:`~polyfuse.heads.ImagesAndTextHead`
:class:`ViLTForRetrieval`  ``ViltForImageAndTextRetrieval``      :class:`~polyfuse.heads.ITMHead`
=====================  =======================================  ====================================

Every class shares :class:`~polyfuse.models.vilt_base.ViLTBase` (architecture in a
:class:`~polyfuse.models.vilt_config.ViLTConfig`). :class:`ViLT` builds one by task name
(``ViLT(task="vqa", ...)``, ``ViLT.from_hf(path)`` picks the checkpoint's task), as HF's ``AutoModel``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from polyfuse.batch import Batch, Encoded
from polyfuse.data.nlvr2 import LABELS as NLVR2_LABELS
from polyfuse.encoders.loading import CheckpointError, resolve_path
from polyfuse.encoders.pretrained.hf import read_hf_config
from polyfuse.fusion.base import FusionOutput
from polyfuse.heads.base import HeadContext, TaskHead
from polyfuse.heads.matching import ITMHead
from polyfuse.heads.nlvr2 import ImagesAndTextHead
from polyfuse.heads.vqa import VQAHead
from polyfuse.losses import vqa_soft_bce
from polyfuse.models.multimodal import ModelOutput
from polyfuse.models.vilt_base import VILT_TASKS, Labels, ViLTBase, ViLTOutput
from polyfuse.models.vilt_config import ViLTConfig
from polyfuse.models.vilt_convert import HF_TASKS, hf_task

__all__ = ["ViLT", "ViLTBase", "ViLTConfig", "ViLTModel", "ViLTForVQA", "ViLTForNLVR2", "ViLTForRetrieval",
           "ViLTOutput", "PooledOutputHead", "ImagesAndTextHead", "HF_TASKS", "CheckpointError"]


class PooledOutputHead(TaskHead):
    """No task: returns the fused pooled output ``(B, D)`` (the backbone alone, HF ``ViltModel``)."""

    def forward(self, fused: FusionOutput, batch: Batch | None, context: HeadContext | None = None) -> Tensor:
        return fused.pooled


@VILT_TASKS.register("model")
class ViLTModel(ViLTBase):
    """The ViLT backbone (HF ``ViltModel``): ``pooler_output`` and ``last_hidden_state``, no task head."""

    task = "model"
    hf_class = "ViltModel"

    def build_head(self, config: ViLTConfig, dims: dict[str, int]) -> TaskHead:
        return PooledOutputHead(config.dim, dims)


@VILT_TASKS.register("vqa")
class ViLTForVQA(ViLTBase):
    """VQA as classification over an answer vocabulary (HF ``ViltForQuestionAnswering``): a
    :class:`~polyfuse.heads.VQAHead` on the pooled output, soft-score BCE x number of answers."""

    task = "vqa"
    hf_class = "ViltForQuestionAnswering"

    def build_head(self, config: ViLTConfig, dims: dict[str, int]) -> TaskHead:
        if self.labels is None:
            raise ValueError("ViLTForVQA needs labels (the answer vocabulary) or num_labels")
        return VQAHead(config.dim, self.labels, hidden=2 * config.dim, dropout=0.0, dims=dims)

    def hf_logits(self, fused: FusionOutput) -> Tensor:
        return self.head(fused, None)

    def hf_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return vqa_soft_bce(logits, labels)


@VILT_TASKS.register("retrieval")
class ViLTForRetrieval(ViLTBase):
    """Image-text matching (HF ``ViltForImageAndTextRetrieval``): an :class:`~polyfuse.heads.ITMHead`
    with uniformly drawn negatives; :meth:`itm_scores` ranks every pair (the paper's TR@K / IR@K).

    Args:
        itm_ranking: :class:`~polyfuse.metrics.itm_ranking.ITMRanking` options (``ks``, ``chunk``,
            ``stages``) to rank every image-caption pair of the evaluation splits in the loop;
            ``None``: ITM accuracy only. Other arguments: :class:`ViLTBase`.
    """

    task = "retrieval"
    hf_class = "ViltForImageAndTextRetrieval"

    def __init__(self, config: ViLTConfig | None = None, *, itm_ranking: Mapping[str, Any] | None = None,
                 **options: Any) -> None:
        self.itm_ranking = None if itm_ranking is None else dict(itm_ranking)
        super().__init__(config, **options)

    def build_head(self, config: ViLTConfig, dims: dict[str, int]) -> TaskHead:
        return ITMHead(config.dim, dims, swap="text", hard_negatives=False, ranking=self.itm_ranking)

    def hf_logits(self, fused: FusionOutput) -> Tensor:
        return self.head.score(fused)[:, None]

    def hf_loss(self, logits: Tensor, labels: Tensor) -> Tensor:  # HF has none: ITM's binary cross-entropy
        return F.binary_cross_entropy_with_logits(logits.squeeze(-1), labels.to(logits.dtype))

    @torch.no_grad()
    def itm_scores(self, input_ids: Tensor, attention_mask: Tensor | None, pixel_values: Tensor,
                   pixel_mask: Tensor | None = None, chunk: int = 64) -> Tensor:
        """``(N_images, N_texts)`` ITM scores of every image with every text; rank with
        :func:`polyfuse.metrics.retrieval_recall`. Texts ``(N_texts, L)``, images ``(N_images, C, H, W)``;
        each image is fused with ``chunk`` texts at a time."""
        rows = []
        for index in range(pixel_values.shape[0]):
            scores = []
            for start in range(0, input_ids.shape[0], chunk):
                ids = input_ids[start:start + chunk]
                mask = None if attention_mask is None else attention_mask[start:start + chunk]
                image = pixel_values[index:index + 1].expand(ids.shape[0], -1, -1, -1)
                image_mask = None if pixel_mask is None else pixel_mask[index:index + 1].expand(ids.shape[0], -1, -1)
                output = self.hf_forward(input_ids=ids, attention_mask=mask, pixel_values=image, pixel_mask=image_mask)
                scores.append(output.logits.squeeze(-1))
            rows.append(torch.cat(scores))
        return torch.stack(rows)


@VILT_TASKS.register("nlvr2")
class ViLTForNLVR2(ViLTBase):
    """One statement about ``num_images`` images (HF ``ViltForImagesAndTextClassification``, NLVR2):
    the text is fused with each image in its own pass, each image tagged with its own modality type
    (``image``, ``image_2``, ...); an :class:`~polyfuse.heads.ImagesAndTextHead` classifies the
    pooled outputs side by side. Batches carry ``text``, ``image``, ``image_2``, ... (one shared patch
    encoder; :class:`~polyfuse.data.nlvr2.NLVR2Reader`) and the class index in ``batch.targets["label"]``.
    Classes default to ``("False", "True")``.
    """

    task = "nlvr2"
    hf_class = "ViltForImagesAndTextClassification"

    def build_head(self, config: ViLTConfig, dims: dict[str, int]) -> TaskHead:
        if config.modality_type_vocab_size < config.num_images + 1:
            raise ValueError(f"ViLTForNLVR2 with {config.num_images} images needs modality_type_vocab_size >= "
                             f"{config.num_images + 1}, got {config.modality_type_vocab_size}")
        if self.labels is None:  # NLVR2 is binary; HF's checkpoints name the classes so
            self.labels = list(NLVR2_LABELS)
        images = config.image_modalities[:config.num_images]
        return ImagesAndTextHead(config.dim, {"text": config.dim, **{name: config.dim for name in images}},
                                 labels=self.labels, images=images)

    @property
    def image_names(self) -> list[str]:
        """The modality of image 1, 2, ... in batches and in the fusion."""
        return list(self.head.images)

    def encode(self, batch: Batch) -> dict[str, Encoded]:
        missing = [m for m in ("text", *self.image_names) if m not in batch.inputs]
        if missing:
            raise KeyError(f"ViLTForNLVR2: batch has no input for modalities {missing}; it has {batch.modalities}")
        encoded = {"text": self.encoders["text"](batch.inputs["text"])}
        encoded.update({name: self.encoders["image"](batch.inputs[name]) for name in self.image_names})
        return encoded

    def forward(self, batch: Batch, return_attention: bool = False) -> ModelOutput:
        """``batch`` -> :class:`ModelOutput` (``fused`` is ``None``: the head makes one pass per image)."""
        encoded = self.encode(batch)
        if self.modality_dropout is not None and self.training:
            encoded = self.modality_dropout(encoded)
        outputs = self.head(None, batch, self.context(encoded, return_attention))
        return ModelOutput(encoded=encoded, fused=None, outputs=outputs, attentions=dict(outputs["attentions"]))

    def hf_encode(self, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None,
                  pixel_values: Tensor, pixel_mask: Tensor | None) -> dict[str, Encoded]:
        """``pixel_values (B, num_images, C, H, W)``, ``pixel_mask (B, num_images, H, W)``."""
        count = len(self.image_names)
        if pixel_values.dim() != 5 or pixel_values.shape[1] != count:
            raise ValueError(f"ViLTForNLVR2 expects pixel_values (B, {count}, C, H, W), "
                             f"got {tuple(pixel_values.shape)}")
        encoded = super().hf_encode(input_ids, attention_mask, token_type_ids, pixel_values[:, 0],
                                    None if pixel_mask is None else pixel_mask[:, 0])
        for index, name in enumerate(self.image_names[1:], start=1):
            mask = None if pixel_mask is None else pixel_mask[:, index]
            encoded[name] = self._embed_image(pixel_values[:, index], mask)
        return encoded

    def hf_predict(self, encoded: dict[str, Encoded], labels: Tensor | None, return_attention: bool) -> ViLTOutput:
        outputs = self.head(None, None, self.context(encoded, return_attention))
        output = ViLTOutput(logits=outputs["logits"], pooler_output=outputs["pooled"], attentions=outputs["attentions"])
        if labels is not None:
            output.loss = self.head.loss(outputs, Batch({}, targets={self.head.target: labels}))
        return output


class ViLT:
    """Any ViLT task class by name, as HF's ``AutoModel`` (and the configs' ``polyfuse.models.ViLT``).

    ``ViLT(task="vqa", labels=..., dim=64, ...)`` builds :class:`ViLTForVQA` (``"model"``, ``"vqa"``,
    ``"nlvr2"``, ``"retrieval"``); ``ViLT.from_hf(path, task=None)`` the class of the checkpoint's
    architecture (or of ``task``) and loads it. Every class is a :class:`ViLTBase`.
    """

    def __new__(cls, task: str = "vqa", *args: Any, **options: Any) -> ViLTBase:  # type: ignore[misc]
        return VILT_TASKS.get(task)(*args, **options)

    @staticmethod
    def from_hf(path: str | Path, task: str | None = None, labels: Labels = None, **options: Any) -> ViLTBase:
        """:meth:`ViLTBase.from_hf` of the class for ``task`` (default: the checkpoint's architecture)."""
        if task is None:
            config, source = read_hf_config(path), str(resolve_path(path))
            ViLTConfig.from_hf(config, source)  # a non-ViLT config.json is refused first
            task = hf_task(config, source)
        return VILT_TASKS.get(task).from_hf(path, labels=labels, **options)

    @staticmethod
    def available() -> list[str]:
        """The task names."""
        return VILT_TASKS.available()

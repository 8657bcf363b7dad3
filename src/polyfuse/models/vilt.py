"""ViLT (Kim, Son & Kim, 2021) as polyfuse modules, loading and exporting Hugging Face checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.batch import Batch, Encoded
from polyfuse.encoders.loading import CheckpointError, load_checked, read_state_dict, resolve_path
from polyfuse.encoders.pretrained.hf import read_hf_config
from polyfuse.encoders.text import TextTransformerEncoder
from polyfuse.encoders.vilt_patches import ViLTPatchEncoder
from polyfuse.fusion.base import FusionOutput
from polyfuse.fusion.early import EarlyFusion
from polyfuse.heads.base import HeadContext, TaskHead
from polyfuse.heads.matching import ITMHead
from polyfuse.heads.vqa import AnswerVocabulary, VQAHead
from polyfuse.losses import vqa_soft_bce
from polyfuse.models.multimodal import ModelOutput, MultimodalModel
from polyfuse.models.vilt_convert import (HF_TASKS, TASK_CLASSES, hf_to_polyfuse, image_modalities,
                                          polyfuse_to_hf, vilt_options)

TASKS = tuple(TASK_CLASSES)


@dataclass
class ViLTOutput:
    """What the Hugging Face-style call returns (the fields of HF's outputs that ViLT fills).

    Attributes:
        logits: ``(B, num_labels)`` (VQA, NLVR2) or ``(B, 1)`` (retrieval); ``None`` for ``task="model"``.
        loss: with ``labels``: VQA soft-score BCE x num_labels, NLVR2 cross-entropy, retrieval BCE.
        last_hidden_state: ``(B, L_text + n_image, D)`` final-LayerNorm tokens (zeros at masked
            positions); ``None`` for NLVR2 (one sequence per image).
        pooler_output: ``(B, D)`` (NLVR2: ``(B, num_images * D)``, the pooled outputs side by side).
        attentions: the fusion's maps ``"joint/layer{i}"`` ``(B, H, L, L)`` when requested.
    """

    logits: Tensor | None = None
    loss: Tensor | None = None
    last_hidden_state: Tensor | None = None
    pooler_output: Tensor | None = None
    attentions: dict[str, Tensor] = field(default_factory=dict)


class PooledOutputHead(TaskHead):
    """No task: returns the fused pooled output ``(B, D)`` (the backbone alone, HF ``ViltModel``)."""

    def forward(self, fused: FusionOutput, batch: Batch | None, context: HeadContext | None = None) -> Tensor:
        return fused.pooled


class ImagesAndTextHead(TaskHead):
    """NLVR2-style classifier over ``num_images`` fused pooled outputs side by side (HF
    ``ViltForImagesAndTextClassification``): ``Linear(nD, nD) -> LayerNorm -> GELU -> Linear(nD, labels)``.

    Each image is fused with the text in its own pass, tagged with its own modality type
    (``image``, ``image_2``, ...); :meth:`ViLT.forward` runs the passes. Loss: cross-entropy.
    """

    def __init__(self, in_dim: int, num_labels: int, num_images: int = 2, dims: dict[str, int] | None = None) -> None:
        super().__init__(in_dim, dims)
        width = in_dim * num_images
        self.num_images = num_images
        self.classifier = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.GELU(),
                                        nn.Linear(width, num_labels))

    def forward(self, fused: FusionOutput, batch: Batch | None, context: HeadContext | None = None) -> Tensor:
        raise NotImplementedError("ImagesAndTextHead needs one fused pass per image: call ViLT(input_ids=..., "
                                  "pixel_values=(B, num_images, C, H, W))")


class ViLT(MultimodalModel):
    """ViLT: one transformer over text tokens and linearly embedded image patches (Kim, Son & Kim,
    "ViLT: Vision-and-Language Transformer Without Convolution or Region Supervision", ICML 2021).

    Built from polyfuse modules, so it trains, fuses and evaluates like any :class:`MultimodalModel`:
    ``encoders["text"]`` is BERT's embedding layer (a 0-block :class:`TextTransformerEncoder`),
    ``encoders["image"]`` the patch embedding with interpolated positions, pixel mask and patch
    sampling (:class:`ViLTPatchEncoder`), ``fusion`` an :class:`EarlyFusion` in ViLT's layout
    (modality-type embeddings, pre-norm blocks, final LayerNorm, pooler on the text [CLS]) and
    ``head`` the task head.

    It is also called like the Hugging Face model it replaces:
    ``model(input_ids=..., attention_mask=..., token_type_ids=None, pixel_values=..., pixel_mask=None,
    labels=None)`` returns a :class:`ViLTOutput` with ``.logits`` (and ``.loss`` given ``labels``).
    :meth:`from_hf` loads a ``save_pretrained`` directory, :meth:`to_hf` exports HF's state dict.

    Padding: padded text tokens and padded image patches are masked as keys; their outputs are zero.
    Missing modalities: an absent modality's tokens are masked (the pooled text [CLS] still sees
    the other one).

    Args:
        task: ``"model"`` (backbone, pooled output), ``"vqa"`` (:class:`VQAHead` over ``labels``),
            ``"nlvr2"`` (:class:`ImagesAndTextHead`), ``"retrieval"`` (ITM score, :class:`ITMHead`).
        labels: answer vocabulary (VQA) or class names (NLVR2); ``num_labels`` if there are no names.
        num_images: images per sample for NLVR2.
        vocab_size, max_text_length, type_vocab_size, pad_token_id: text embedding.
        modality_type_vocab_size: rows of the modality-type table (text, image, image_2, ...).
        dim, depth, heads, mlp_hidden, activation, dropout, attn_dropout, eps: the transformer.
        image_size, patch_size, in_chans, max_image_length: the patch embedding.
        attention_backend: see :mod:`polyfuse.attention`.
        itm_ranking: ``task="retrieval"``: :class:`~polyfuse.metrics.itm_ranking.ITMRanking` options
            (``ks``, ``chunk``) to rank every image-caption pair of the evaluation splits in the loop
            (the paper's TR@K / IR@K); ``None``: ITM accuracy only.
    """

    def __init__(self, task: str = "vqa", labels: Sequence[str] | AnswerVocabulary | None = None,
                 num_labels: int | None = None, num_images: int = 2, vocab_size: int = 30522,
                 max_text_length: int = 40, type_vocab_size: int = 2, modality_type_vocab_size: int = 2,
                 dim: int = 768, depth: int = 12, heads: int = 12, mlp_hidden: int = 3072, activation: str = "gelu",
                 dropout: float = 0.0, attn_dropout: float = 0.0, eps: float = 1e-12, image_size: int = 384,
                 patch_size: int = 32, in_chans: int = 3, max_image_length: int = -1, pad_token_id: int = 0,
                 attention_backend: str | None = None, itm_ranking: Mapping[str, Any] | None = None) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown ViLT task {task!r}; valid: {', '.join(TASKS)}")
        if task == "nlvr2" and modality_type_vocab_size < num_images + 1:
            raise ValueError(f"ViLT nlvr2 with {num_images} images needs modality_type_vocab_size >= "
                             f"{num_images + 1}, got {modality_type_vocab_size}")
        text = TextTransformerEncoder(vocab_size, max_text_length, dim, depth=0, heads=heads, dropout=dropout,
                                      type_vocab_size=type_vocab_size, pad_token_id=pad_token_id, eps=eps)
        image = ViLTPatchEncoder(image_size, patch_size, in_chans, dim, max_image_length, dropout)
        image_names = image_modalities(modality_type_vocab_size)
        fusion = EarlyFusion({"text": dim, **{name: dim for name in image_names}}, dim, dim, depth, heads,
                             dropout=dropout, project=False, class_token=False, missing_tokens=False,
                             token_projection=False, eps=eps, mlp_hidden=mlp_hidden, activation=activation,
                             attn_dropout=attn_dropout, attention_backend=attention_backend)
        dims = {"text": dim, "image": dim}
        if labels is None and task in ("vqa", "nlvr2"):
            if not num_labels:
                raise ValueError(f"ViLT task {task!r} needs labels (answer vocabulary / class names) or num_labels")
            labels = [f"LABEL_{index}" for index in range(num_labels)]
        head: TaskHead
        if task == "vqa":
            head = VQAHead(dim, labels, hidden=2 * dim, dropout=0.0, dims=dims)
        elif task == "nlvr2":
            head = ImagesAndTextHead(dim, len(labels), num_images, dims=dims)
        elif task == "retrieval":
            head = ITMHead(dim, dims, swap="text", hard_negatives=False, ranking=itm_ranking)
        else:
            head = PooledOutputHead(dim, dims)
        super().__init__({"text": text, "image": image}, fusion, head)
        self.task, self.num_images, self.type_count = task, num_images, modality_type_vocab_size
        self.image_names = image_names  # fusion modality of image 1, 2, ... (HF image_token_type_idx 1, 2, ...)
        if isinstance(labels, AnswerVocabulary):
            labels = labels.answers
        self.labels = None if labels is None else list(labels)
        self.architecture: dict[str, Any] = dict(
            vocab_size=vocab_size, max_text_length=max_text_length, type_vocab_size=type_vocab_size,
            modality_type_vocab_size=modality_type_vocab_size, dim=dim, depth=depth, heads=heads,
            mlp_hidden=mlp_hidden, activation=activation, eps=eps, image_size=image_size, patch_size=patch_size,
            in_chans=in_chans, max_image_length=max_image_length, num_images=num_images)

    def forward(self, input_ids: Tensor | Batch | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, pixel_values: Tensor | None = None,
                pixel_mask: Tensor | None = None, labels: Tensor | None = None, return_attention: bool = False,
                output_attentions: bool = False) -> ViLTOutput | ModelOutput:
        """HF-style call (see the class docstring), or ``model(batch)`` -> :class:`ModelOutput`.

        ``input_ids, attention_mask, token_type_ids: (B, L)``; ``pixel_values: (B, C, H, W)``
        (NLVR2: ``(B, num_images, C, H, W)``); ``pixel_mask: (B, H, W)`` (NLVR2 ``(B, num_images, H, W)``).
        """
        if isinstance(input_ids, Batch):
            return super().forward(input_ids, return_attention=return_attention)
        if input_ids is None or pixel_values is None:
            raise ValueError("ViLT needs input_ids (B, L) and pixel_values (B, C, H, W)")
        keep = return_attention or output_attentions
        text_mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        text_tokens = self.encoders["text"].embeddings(input_ids, token_type_ids, text_mask)
        text = Encoded(text_tokens, text_mask)
        if self.task == "nlvr2":
            return self._images_and_text(text, pixel_values, pixel_mask, labels, keep)
        fused = self._fuse(text, "image", pixel_values, pixel_mask, keep)
        # drop the one masked placeholder token of each unused image type
        lengths = [input_ids.shape[1], fused.tokens.shape[1] - input_ids.shape[1] - (len(self.image_names) - 1)]
        hidden = fused.tokens[:, : sum(lengths)]
        output = ViLTOutput(last_hidden_state=hidden, pooler_output=fused.pooled, attentions=fused.attentions)
        if self.task == "vqa":
            output.logits = self.head.classifier(fused.pooled)
            if labels is not None:
                output.loss = vqa_soft_bce(output.logits, labels)
        elif self.task == "retrieval":
            output.logits = self.head.classifier(fused.pooled)
            if labels is not None:  # HF has no retrieval loss: ITM's binary cross-entropy
                output.loss = F.binary_cross_entropy_with_logits(output.logits.squeeze(-1), labels.to(output.logits.dtype))
        return output

    def _fuse(self, text: Encoded, image_name: str, pixel_values: Tensor, pixel_mask: Tensor | None,
              keep: bool) -> FusionOutput:
        image_tokens, image_mask = self.encoders["image"].embed(pixel_values, pixel_mask)
        return self.fusion({"text": text, image_name: Encoded(image_tokens, image_mask)}, return_attention=keep)

    def _images_and_text(self, text: Encoded, pixel_values: Tensor, pixel_mask: Tensor | None, labels: Tensor | None,
                         keep: bool) -> ViLTOutput:
        if pixel_values.dim() != 5 or pixel_values.shape[1] != self.num_images:
            raise ValueError(f"ViLT nlvr2 expects pixel_values (B, {self.num_images}, C, H, W), "
                             f"got {tuple(pixel_values.shape)}")
        pooled, maps = [], {}
        for index in range(self.num_images):
            fused = self._fuse(text, self.image_names[index], pixel_values[:, index],
                               None if pixel_mask is None else pixel_mask[:, index], keep)
            pooled.append(fused.pooled)
            maps.update({f"image{index}/{name}": value for name, value in fused.attentions.items()})
        pooler_output = torch.cat(pooled, dim=-1)
        output = ViLTOutput(logits=self.head.classifier(pooler_output), pooler_output=pooler_output, attentions=maps)
        if labels is not None:
            output.loss = F.cross_entropy(output.logits, labels.view(-1))
        return output

    @torch.no_grad()
    def itm_scores(self, input_ids: Tensor, attention_mask: Tensor | None, pixel_values: Tensor,
                   pixel_mask: Tensor | None = None, chunk: int = 64) -> Tensor:
        """``(N_images, N_texts)`` ITM scores of every image with every text (``task="retrieval"``), the
        paper's retrieval ranking; rank with :func:`polyfuse.metrics.retrieval_recall`. Texts ``(N_texts, L)``,
        images ``(N_images, C, H, W)``; each image is fused with ``chunk`` texts at a time."""
        if self.task != "retrieval":
            raise ValueError(f"itm_scores needs a retrieval ViLT (task='retrieval'), this one is {self.task!r}")
        rows = []
        for index in range(pixel_values.shape[0]):
            scores = []
            for start in range(0, input_ids.shape[0], chunk):
                ids = input_ids[start:start + chunk]
                mask = None if attention_mask is None else attention_mask[start:start + chunk]
                image = pixel_values[index:index + 1].expand(ids.shape[0], -1, -1, -1)
                image_mask = None if pixel_mask is None else pixel_mask[index:index + 1].expand(ids.shape[0], -1, -1)
                scores.append(self(input_ids=ids, attention_mask=mask, pixel_values=image, pixel_mask=image_mask)
                              .logits.squeeze(-1))
            rows.append(torch.cat(scores))
        return torch.stack(rows)

    @classmethod
    def from_hf(cls, path: str | Path, task: str | None = None, labels: Sequence[str] | AnswerVocabulary | None = None,
                **options: Any) -> "ViLT":
        """Build and load from a Hugging Face ``save_pretrained`` directory (``config.json`` + weights).

        Args:
            path: directory of a ``ViltModel``, ``ViltForQuestionAnswering``,
                ``ViltForImagesAndTextClassification``, ``ViltForImageAndTextRetrieval`` (or
                ``ViltForMaskedLM``, backbone only).
            task: the head to build (default: the checkpoint's). A head the checkpoint lacks (e.g.
                VQA fine-tuning from a pre-trained backbone) starts freshly initialised and is
                reported; another head the checkpoint holds is ignored and reported.
            labels: answer vocabulary / class names (default: the checkpoint's ``id2label``).
            options: other :class:`ViLT` arguments (``dropout``, ``max_image_length``, ``attention_backend``).

        Raises:
            CheckpointError: not a ViLT ``config.json``, or weights that do not fit (file and first keys named).
        """
        source = str(resolve_path(path))
        kwargs = vilt_options(read_hf_config(path), source)
        saved_task = kwargs["task"]
        kwargs["task"] = task or saved_task
        if labels is not None or kwargs["task"] != saved_task:
            kwargs["labels"] = labels
        kwargs.update(options)
        model = cls(**kwargs)
        state = read_state_dict(path)
        converted, ignored = hf_to_polyfuse(state, model.task, model.type_count)
        fresh = ("head.",) if model.task != saved_task and model.task != "model" else ()
        model.load_report = load_checked(model, converted, source, ignored, fresh_prefixes=fresh)
        return model

    def to_hf(self) -> dict[str, Tensor]:
        """The state dict of HF's class for :attr:`task` (``ViltModel``, ``ViltForQuestionAnswering``, ...)."""
        state = {key: value.detach().clone() for key, value in self.state_dict().items()}
        return polyfuse_to_hf(state, self.task, self.type_count)

    def hf_config(self) -> dict[str, Any]:
        """A ``ViltConfig`` keyword dict for :meth:`to_hf`'s state dict (``ViltConfig(**model.hf_config())``)."""
        arch = self.architecture
        config: dict[str, Any] = dict(
            vocab_size=arch["vocab_size"], max_position_embeddings=arch["max_text_length"],
            type_vocab_size=arch["type_vocab_size"], modality_type_vocab_size=arch["modality_type_vocab_size"],
            hidden_size=arch["dim"], num_hidden_layers=arch["depth"], num_attention_heads=arch["heads"],
            intermediate_size=arch["mlp_hidden"], hidden_act={"gelu_tanh": "gelu_new"}.get(arch["activation"],
                                                                                           arch["activation"]),
            layer_norm_eps=arch["eps"], image_size=arch["image_size"], patch_size=arch["patch_size"],
            num_channels=arch["in_chans"], max_image_length=arch["max_image_length"],
            architectures=[TASK_CLASSES[self.task]])
        if self.labels is not None:
            config.update(id2label=dict(enumerate(self.labels)), label2id={l: i for i, l in enumerate(self.labels)})
        if self.task == "nlvr2":
            config["num_images"] = self.num_images
        return config


__all__ = ["ViLT", "ViLTOutput", "ImagesAndTextHead", "PooledOutputHead", "HF_TASKS", "CheckpointError"]

"""What every ViLT task class shares (HF's ``ViltPreTrainedModel`` + ``ViltModel``): the backbone built
from a :class:`~polyfuse.models.vilt_config.ViLTConfig`, the two entry points (a polyfuse
:class:`~polyfuse.batch.Batch`, HF's keyword inputs) and the checkpoint conversion."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from polyfuse.batch import Encoded
from polyfuse.encoders.loading import load_checked, read_state_dict, resolve_path
from polyfuse.encoders.pretrained.hf import read_hf_config
from polyfuse.encoders.text import TextTransformerEncoder
from polyfuse.encoders.vilt_patches import ViLTPatchEncoder
from polyfuse.fusion.base import FusionOutput
from polyfuse.fusion.early import EarlyFusion
from polyfuse.heads.base import HeadContext, TaskHead
from polyfuse.heads.vqa import AnswerVocabulary
from polyfuse.models.multimodal import MultimodalModel
from polyfuse.models.vilt_config import ViLTConfig
from polyfuse.models.vilt_convert import hf_labels, hf_task, hf_to_polyfuse, labels_to_hf, polyfuse_to_hf
from polyfuse.registry import Registry

__all__ = ["ViLTBase", "ViLTOutput", "VILT_TASKS"]

#: ViLT task name -> task class (``ViLT(task=...)``, ``ViLT.from_hf``); filled by :mod:`polyfuse.models.vilt`
VILT_TASKS: Registry[type["ViLTBase"]] = Registry("ViLT task", tag=None)
Labels = Sequence[str] | AnswerVocabulary | None


@dataclass
class ViLTOutput:
    """What the Hugging Face-style call returns (the fields of HF's outputs that ViLT fills).

    Attributes:
        logits: ``(B, num_labels)`` (VQA, NLVR2) or ``(B, 1)`` (retrieval); ``None`` for the backbone.
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


class ViLTBase(MultimodalModel):
    """ViLT: one transformer over text tokens and linearly embedded image patches (Kim, Son & Kim,
    "ViLT: Vision-and-Language Transformer Without Convolution or Region Supervision", ICML 2021).

    Built from polyfuse modules, so it trains, fuses and evaluates like any :class:`MultimodalModel`:
    ``encoders["text"]`` is BERT's embedding layer (a 0-block :class:`TextTransformerEncoder`),
    ``encoders["image"]`` the patch embedding with interpolated positions, pixel mask and patch
    sampling (:class:`ViLTPatchEncoder`), ``fusion`` an :class:`EarlyFusion` in ViLT's layout
    (modality-type embeddings, pre-norm blocks, final LayerNorm, pooler on the text [CLS]) and
    ``head`` the task's head (:meth:`build_head`), used only through the head interface.

    Two entry points: ``model(batch)`` -> :class:`ModelOutput` (training, as every polyfuse model) and
    :meth:`hf_forward` (HF's keyword inputs and outputs). :meth:`from_hf` loads a ``save_pretrained``
    directory, :meth:`to_hf` / :meth:`hf_config` export HF's state dict and config.

    Padding: padded text tokens and padded image patches are masked as keys; their outputs are zero.
    Missing modalities: an absent modality's tokens are masked (the pooled text [CLS] still sees
    the other one).

    Args:
        config: the architecture (default ``ViLTConfig()``, ViLT-B/32); ``architecture`` keywords
            (``dim=64``, ...) change single fields of it.
        labels: answer vocabulary / class names (tasks with a classifier). num_labels: their count
            when there are no names.
        attention_backend: see :mod:`polyfuse.attention`.
        packing: run the single-stream transformer packed (:class:`EarlyFusion`'s ``packing``,
            docs/packing.md): each sample's real text tokens and image patches form one packed
            sequence with block-diagonal attention; outputs identical to the padded path.
        task: accepted for the old ``ViLT(task=...)`` call; must equal the class's :attr:`task`.
    """

    task: ClassVar[str] = ""
    hf_class: ClassVar[str] = ""

    def __init__(self, config: ViLTConfig | None = None, *, labels: Labels = None, num_labels: int | None = None,
                 attention_backend: str | None = None, packing: bool = False, task: str | None = None,
                 **architecture: Any) -> None:
        if task is not None and task != self.task:
            raise ValueError(f"{type(self).__name__} is the {self.task!r} task, got task={task!r}")
        config = (config or ViLTConfig()).replace(**architecture)
        dim = config.dim
        text = TextTransformerEncoder(config.vocab_size, config.max_text_length, dim, depth=0, heads=config.heads,
                                      dropout=config.dropout, type_vocab_size=config.type_vocab_size,
                                      pad_token_id=config.pad_token_id, eps=config.eps)
        image = ViLTPatchEncoder(config.image_size, config.patch_size, config.in_chans, dim, config.max_image_length,
                                 config.dropout)
        fusion = EarlyFusion({"text": dim, **{name: dim for name in config.image_modalities}}, dim, dim, config.depth,
                             config.heads, dropout=config.dropout, project=False, class_token=False,
                             missing_tokens=False, token_projection=False, eps=config.eps,
                             mlp_hidden=config.mlp_hidden, activation=config.activation,
                             attn_dropout=config.attn_dropout, attention_backend=attention_backend,
                             packing=packing)
        if isinstance(labels, AnswerVocabulary):
            labels = labels.answers
        self.labels = None if labels is None else [str(label) for label in labels]
        if self.labels is None and num_labels:
            self.labels = [f"LABEL_{index}" for index in range(num_labels)]
        head = self.build_head(config, {"text": dim, "image": dim})
        super().__init__({"text": text, "image": image}, fusion, head)
        self.config = config

    # -- what a task class chooses -------------------------------------------------------------
    def build_head(self, config: ViLTConfig, dims: dict[str, int]) -> TaskHead:
        """The task's head (``self.labels`` is set)."""
        raise NotImplementedError(f"{type(self).__name__} must build its head")

    def hf_logits(self, fused: FusionOutput) -> Tensor | None:
        """HF's ``logits`` from a fused pass of the given pairs."""
        return None

    def hf_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """HF's loss of ``logits`` against its ``labels``."""
        raise ValueError(f"{type(self).__name__} has no loss for labels")

    # -- polyfuse path: MultimodalModel.forward(batch) ------------------------------------------
    def context(self, encoded: dict[str, Encoded], return_attention: bool = False) -> HeadContext:
        """What the head may use besides the fused output (its own passes return maps when asked)."""
        fuse = partial(self.fusion, return_attention=True) if return_attention else self.fusion
        return HeadContext(encoded=encoded, encode=self.encode, encode_modality=self.encode_modality, fuse=fuse)

    # -- Hugging Face path -----------------------------------------------------------------------
    def hf_encode(self, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None,
                  pixel_values: Tensor, pixel_mask: Tensor | None) -> dict[str, Encoded]:
        """HF's inputs -> the per-modality encodings (``pixel_values (B, C, H, W)``)."""
        text_mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        text_tokens = self.encoders["text"].embeddings(input_ids, token_type_ids, text_mask)
        return {"text": Encoded(text_tokens, text_mask), "image": self._embed_image(pixel_values, pixel_mask)}

    def _embed_image(self, pixel_values: Tensor, pixel_mask: Tensor | None) -> Encoded:
        tokens, mask = self.encoders["image"].embed(pixel_values, pixel_mask)
        return Encoded(tokens, mask)

    def hf_predict(self, encoded: dict[str, Encoded], labels: Tensor | None, return_attention: bool) -> ViLTOutput:
        """One fused pass of text and image -> HF's output fields."""
        fused = self.fusion(encoded, return_attention=return_attention)
        length = encoded["text"].tokens.shape[1] + encoded["image"].tokens.shape[1]  # drop unused image types
        output = ViLTOutput(logits=self.hf_logits(fused), last_hidden_state=fused.tokens[:, :length],
                            pooler_output=fused.pooled, attentions=fused.attentions)
        if labels is not None and output.logits is not None:
            output.loss = self.hf_loss(output.logits, labels)
        return output

    def hf_forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                   token_type_ids: Tensor | None = None, pixel_values: Tensor | None = None,
                   pixel_mask: Tensor | None = None, labels: Tensor | None = None,
                   output_attentions: bool = False) -> ViLTOutput:
        """The call of HF's class (:attr:`hf_class`): ``input_ids, attention_mask, token_type_ids: (B, L)``,
        ``pixel_values: (B, C, H, W)``, ``pixel_mask: (B, H, W)`` (NLVR2: one more ``num_images`` axis)."""
        if pixel_values is None:
            raise ValueError(f"{type(self).__name__}.hf_forward needs input_ids (B, L) and pixel_values")
        encoded = self.hf_encode(input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask)
        return self.hf_predict(encoded, labels, output_attentions)

    # -- checkpoints -----------------------------------------------------------------------------
    @classmethod
    def from_hf(cls, path: str | Path, labels: Labels = None, **options: Any) -> "ViLTBase":
        """Build this task class and load a Hugging Face ``save_pretrained`` directory into it.

        Args:
            path: directory of a ``ViltModel``, ``ViltForQuestionAnswering``,
                ``ViltForImagesAndTextClassification``, ``ViltForImageAndTextRetrieval`` (or
                ``ViltForMaskedLM``, backbone only).
            labels: answer vocabulary / class names (default: the checkpoint's ``id2label`` when it
                holds this task's head). A head the checkpoint lacks (VQA fine-tuning from a
                pre-trained backbone) starts freshly initialised and is reported; another task's head
                in the checkpoint is ignored and reported.
            options: :class:`ViLTConfig` fields (``dropout``, ``max_image_length``) and the class's
                other arguments (``attention_backend``).

        Raises:
            CheckpointError: not a ViLT ``config.json``, or weights that do not fit (file and first keys named).
        """
        source = str(resolve_path(path))
        hf = read_hf_config(path)
        config = ViLTConfig.from_hf(hf, source)
        saved_task = hf_task(hf, source)
        if labels is None and cls.task == saved_task:
            labels = hf_labels(hf)
        model = cls(config, labels=labels, **options)
        converted, ignored = hf_to_polyfuse(read_state_dict(path), cls.task, model.config.modality_type_vocab_size,
                                            saved_task)
        fresh = ("head.",) if cls.task not in (saved_task, "model") else ()
        model.load_report = load_checked(model, converted, source, ignored, fresh_prefixes=fresh)
        return model

    def to_hf(self) -> dict[str, Tensor]:
        """The state dict of HF's class for this task (:attr:`hf_class`)."""
        state = {key: value.detach().clone() for key, value in self.state_dict().items()}
        return polyfuse_to_hf(state, self.task, self.config.modality_type_vocab_size)

    def hf_config(self) -> dict[str, Any]:
        """A ``ViltConfig`` keyword dict for :meth:`to_hf`'s state dict (``ViltConfig(**model.hf_config())``)."""
        return {**self.config.to_hf(), "architectures": [self.hf_class], **labels_to_hf(self.labels)}

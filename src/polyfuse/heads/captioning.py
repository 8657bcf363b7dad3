"""Captioning head: a transformer decoder over the fused tokens, teacher-forced training, beam search."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from polyfuse.batch import Batch, Encoded
from polyfuse.data.packing import pack_masked, sample_packing_spec
from polyfuse.fusion.base import FusionOutput
from polyfuse.heads.base import HEADS, HeadContext, TaskHead
from polyfuse.heads.decoder import CaptionDecoder, DecoderStepper
from polyfuse.heads.generation import beam_search, greedy_search
from polyfuse.losses import sequence_cross_entropy
from polyfuse.metrics import CAPTION_METRICS, CaptionScores

IGNORE = -100
Memory = Literal["fused", "encoded"]


@HEADS.register("captioning")
class CaptioningHead(TaskHead):
    """Generate text conditioned on the sample (image captioning; generative VQA by subclassing).

    A :class:`~polyfuse.heads.decoder.CaptionDecoder` cross-attends to a memory: the fused tokens
    (``memory="fused"``; a fusion without tokens gives its pooled vector as one token) or the
    per-modality encoder tokens, projected and concatenated (``memory="encoded"``, optionally only
    ``memory_modalities``), whose padding and absent modalities are masked.

    Training: teacher forcing on ``batch.targets[target]`` (``[BOS] w_1 ... w_n [EOS] [PAD]...``),
    cross-entropy with label smoothing over the non-padding positions. Evaluation (``eval()`` mode):
    also generates -- greedy for ``num_beams=1``, else batched beam search with ``length_penalty``
    and ``early_stopping`` (:mod:`polyfuse.heads.generation`), up to ``max_length`` tokens, with the
    decoder's KV cache -- and decodes to text with the tokenizer.

    Metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr(-D) through pycocoevalcap on the generated captions
    against ``batch.extras[references]`` (:class:`~polyfuse.metrics.CaptionScores`, percent).

    Args:
        in_dim: fused width. dims: encoder widths. vocab_size: text vocabulary.
        tokenizer: a Hugging Face ``tokenizers`` JSON file to decode ids (``None``: ids joined by spaces).
        dim, depth, heads, mlp_ratio, dropout: decoder settings. max_length: generated tokens at most.
        label_smoothing: of the cross-entropy. target: the token-id target. references: the extras
            key of the reference caption(s). bos_id, eos_id, pad_id: special ids.
        num_beams, length_penalty, early_stopping: decoding. generate_in_eval: generate in eval mode.
        metrics: which caption metrics to compute (METEOR starts a JVM each evaluation).
        packing: packed (unpadded) teacher forcing in the decoder (:class:`CaptionDecoder`); the
            loss is unchanged, generation stays padded.
        sample_packing: ``{budget: int, strategy: "ffd" | "greedy", rows: int | None}`` or ``None``
            (off). In training, the batch's captions are packed into rows of ``budget`` tokens
            (:func:`~polyfuse.data.packing.pack_padded`) and the decoder runs on those fixed-width
            rows (:meth:`CaptionDecoder.forward_rows`: causal attention within each caption, each
            caption cross-attending to its own sample's memory, positions restarting per caption);
            the logits are unpacked to ``(B, L, vocab)``, so per-sample losses and the reduction are
            the padded path's. A caption longer than ``budget`` is an error naming it. Evaluation
            and generation take the normal path. Overrides ``packing`` in training.

    Sample packing is laid out here, in the head, not in the DataLoader's collate: the rows only
    make sense with the per-sample memory that the model computes, the :class:`Batch` contract stays
    as it is (no packed field to move, slice or gather), and under DDP every rank packs its own local
    batch, so its loss -- and the all-reduced gradient -- is exactly the padded one. The cost is one
    host read of the caption lengths per step (the padded path already reads their maximum) and
    a first-fit pass over ``B`` lengths.
    """

    monitor = "CIDEr"
    monitor_mode = "max"
    masks_invalid_rows = True

    def __init__(self, in_dim: int, dims: Mapping[str, int] | None = None, *, vocab_size: int,
                 tokenizer: str | Path | None = None, dim: int = 128, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 2.0, dropout: float = 0.1, max_length: int = 24, label_smoothing: float = 0.1,
                 target: str = "caption_ids", references: str = "caption", memory: Memory = "fused",
                 memory_modalities: Sequence[str] | None = None, bos_id: int = 2, eos_id: int = 3, pad_id: int = 0,
                 num_beams: int = 3, length_penalty: float = 1.0, early_stopping: bool = True,
                 generate_in_eval: bool = True, metrics: Sequence[str] = CAPTION_METRICS,
                 packing: bool = False, sample_packing: Mapping[str, Any] | None = None) -> None:
        if memory == "encoded":
            self.needs_fusion = False
        super().__init__(in_dim, dims)
        if memory not in ("fused", "encoded"):
            raise ValueError(f"memory must be 'fused' or 'encoded', got {memory!r}")
        self.memory_kind, self.target, self.references = memory, target, references
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.max_length, self.label_smoothing = max_length, label_smoothing
        self.num_beams, self.length_penalty, self.early_stopping = num_beams, length_penalty, early_stopping
        self.generate_in_eval, self.metric_names = generate_in_eval, tuple(metrics)
        if memory == "encoded":
            modalities = list(self.dims) if memory_modalities is None else list(memory_modalities)
            missing = [m for m in modalities if m not in self.dims]
            if missing or not modalities:
                raise KeyError(f"CaptioningHead memory modalities {modalities}: no encoder width for {missing}")
            self.memory_projections = nn.ModuleDict({m: nn.Linear(self.dims[m], dim) for m in modalities})
            memory_dim = dim
        else:
            memory_dim = in_dim
        self.decoder = CaptionDecoder(vocab_size, dim, memory_dim, depth, heads, mlp_ratio, dropout,
                                      max_positions=max_length + 1, pad_id=pad_id, packing=packing)
        self.decoder.input_name = target
        self.sample_packing = sample_packing_spec(sample_packing, type(self).__name__)
        self.tokenizer_path = None if tokenizer is None else str(tokenizer)
        self._tokenizer = None

    # -- memory --------------------------------------------------------------------------------
    def memory(self, fused: FusionOutput | None, context: HeadContext | None) -> tuple[Tensor, Tensor | None]:
        """``(memory (B, M, memory_dim), mask (B, M) or None)``."""
        if self.memory_kind == "fused":
            if fused is None:
                raise ValueError("CaptioningHead(memory='fused') needs a fusion")
            if fused.tokens is None:
                return fused.pooled[:, None], None
            return fused.tokens, fused.mask
        context = self.require(context, "encoded")
        parts, masks = [], []
        for name, projection in self.memory_projections.items():
            encoded: Encoded = context.encoded[name]
            parts.append(projection(encoded.tokens))
            masks.append(encoded.valid_mask())
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def _sample_packed_logits(self, inputs: Tensor, memory: Tensor, memory_mask: Tensor | None) -> Tensor:
        """Teacher forcing through packed rows (``sample_packing``): ``inputs (B, L)`` -> ``(B, L, vocab)``."""
        rows = pack_masked(inputs, inputs != self.pad_id, pad_id=self.pad_id, name=self.target, **self.sample_packing)
        return rows.unpack(self.decoder.forward_rows(rows, memory, memory_mask), inputs.shape[1])

    # -- text ----------------------------------------------------------------------------------
    def _targets(self, batch: Batch) -> Tensor:
        if self.target not in batch.targets:
            raise KeyError(f"{type(self).__name__} needs token ids in batch.targets[{self.target!r}]; targets: "
                           f"{list(batch.targets)} (AV-digits: data.task=captioning)")
        ids = batch.targets[self.target]
        # drop columns that are padding everywhere; keep [BOS] + one token for a batch of placeholders
        length = max(int((ids != self.pad_id).sum(dim=1).max()), 2)
        if length > self.max_length + 1:
            raise ValueError(f"{self.target} has {length} tokens; max_length={self.max_length} allows "
                             f"{self.max_length + 1} ([BOS] + text + [EOS])")
        return ids[:, :length]

    def decode(self, sequences: Tensor) -> list[str]:
        """Token ids ``(B, T)`` -> text, stopping at EOS and skipping special tokens."""
        rows = []
        for row in sequences.tolist():
            ids = row[:row.index(self.eos_id)] if self.eos_id in row else row
            ids = [i for i in ids if i not in (self.pad_id, self.bos_id)]
            if self.tokenizer_path is None:
                rows.append(" ".join(str(i) for i in ids))
            else:
                rows.append(self.tokenizer.decode(ids, skip_special_tokens=True))
        return rows

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(self.tokenizer_path)
        return self._tokenizer

    # -- generation ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, memory: Tensor, memory_mask: Tensor | None = None, num_beams: int | None = None,
                 max_length: int | None = None, length_penalty: float | None = None,
                 early_stopping: bool | None = None) -> tuple[Tensor, Tensor]:
        """``(sequences (B, T), scores (B,))`` for ``memory (B, M, memory_dim)``.

        Greedy for one beam, else beam search (:mod:`polyfuse.heads.generation`); arguments left
        ``None`` take the head's settings.
        """
        num_beams = self.num_beams if num_beams is None else num_beams
        max_length = self.max_length if max_length is None else max_length
        options = dict(batch_size=memory.shape[0], bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id,
                       max_length=max_length, device=memory.device)
        stepper = DecoderStepper(self.decoder, memory, memory_mask, copies=num_beams)
        if num_beams == 1:
            return greedy_search(stepper, **options)
        return beam_search(stepper, num_beams=num_beams,
                           length_penalty=self.length_penalty if length_penalty is None else length_penalty,
                           early_stopping=self.early_stopping if early_stopping is None else early_stopping,
                           **options)

    # -- head protocol -------------------------------------------------------------------------
    def forward(self, fused: FusionOutput | None, batch: Batch, context: HeadContext | None = None) -> dict[str, Any]:
        memory, memory_mask = self.memory(fused, context)
        ids = self._targets(batch)
        if self.training and self.sample_packing is not None:
            logits = self._sample_packed_logits(ids[:, :-1], memory, memory_mask)
        else:
            logits = self.decoder(ids[:, :-1], memory, memory_mask)
        labels = ids[:, 1:].masked_fill(ids[:, 1:] == self.pad_id, IGNORE)
        outputs: dict[str, Any] = {"logits": logits, "labels": labels, "generated": None}
        if not self.training and self.generate_in_eval:
            sequences, _ = self.generate(memory, memory_mask)
            outputs["generated"] = self.decode(sequences)
        return outputs

    def loss(self, outputs: dict[str, Any], batch: Batch) -> Tensor:
        return sequence_cross_entropy(outputs["logits"], outputs["labels"], IGNORE, self.label_smoothing,
                                      valid=batch.valid)

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        if stage == "train":  # nothing is generated while training
            return MetricCollection({})
        return MetricCollection({"captions": CaptionScores(self.metric_names)})

    def _references(self, batch: Batch) -> list[list[str]]:
        if self.references not in batch.extras:
            raise KeyError(f"{type(self).__name__} needs reference text in batch.extras[{self.references!r}]; "
                           f"extras: {list(batch.extras)}")
        return [[r] if isinstance(r, str) else list(r) for r in batch.extras[self.references]]

    def update_metrics(self, metrics: MetricCollection, outputs: dict[str, Any], batch: Batch) -> None:
        if outputs["generated"] is not None and "captions" in metrics.keys(keep_base=True):
            metrics["captions"].update(batch.ids, outputs["generated"], self._references(batch))

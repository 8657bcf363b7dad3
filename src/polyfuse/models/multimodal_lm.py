"""Fusion into a language model: encoders -> connector -> tokens spliced into a causal LM (LLaVA / BLIP-2).

:class:`MultimodalLM` composes polyfuse encoders (image, audio, ...), a connector from the fusion
catalogue (:mod:`polyfuse.fusion.connectors`, ``resampler``, ``qformer``) and any Hugging Face
causal LM (``AutoModelForCausalLM``: Llama, Qwen2, GPT-2, ...). Each modality's connector tokens
replace its placeholder token (``<image>``, ``<audio>``) in the chat-formatted text; a sample without
the modality gets no token for it at all. The loss is next-token cross-entropy on answer tokens
only (:mod:`polyfuse.models.chat`). Training stages (LLaVA, Liu et al. 2023):

* ``stage=1``: only the connector trains; encoders and LM are frozen (feature alignment).
* ``stage=2``: the connector and LoRA adapters on the LM train (``peft``, :mod:`polyfuse.models.lora`),
  or the connector and the whole LM without ``lora`` (LLaVA's full fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from polyfuse.batch import Batch, Encoded
from polyfuse.fusion.connectors import Connector
from polyfuse.heads.base import TaskHead
from polyfuse.models import lora as lora_lib
from polyfuse.models.chat import IGNORE_INDEX, ChatTemplate, last_answer, load_chat_tokenizer
from polyfuse.models.multimodal import ModelOutput

__all__ = ["MultimodalLM", "LMOutput", "LanguageModelingHead", "Spliced", "load_causal_lm"]

DEFAULT_PLACEHOLDERS = {"image": "<image>", "audio": "<audio>"}


@dataclass
class LMOutput:
    """``logits (B, L, V)``; ``loss``: mean over answer tokens (``None`` without labels); ``labels (B, L)``;
    ``generated``: greedy answers to each conversation's last question when the model generates in
    evaluation (``eval_generate``), with ``references`` the conversations' last answers."""

    logits: Tensor
    loss: Tensor | None = None
    labels: Tensor | None = None
    generated: list[str] | None = None
    references: list[str] | None = None


@dataclass
class Spliced:
    """The LM's input after splicing: ``inputs_embeds (B, L, H)``, ``attention_mask (B, L)`` (1 = real),
    ``position_ids (B, L)`` (counting real tokens only), ``labels (B, L)`` or ``None``."""

    inputs_embeds: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    labels: Tensor | None


class LanguageModelingHead(TaskHead):
    """The training module's view of :class:`MultimodalLM`: the loss is the LM's answer-token loss.

    Args: dims: modality -> encoder width. eos_id: the EOS token, left out of the accuracy (it
    closes every answer, so counting it would credit short answers for their ending alone).
    exact_match: also score generated answers (``answer_exact_match``) in validation and test.
    """

    needs_fusion = False
    monitor = "answer_token_acc"  # what polyfuse-eval reports by default; the experiments select on val/loss
    monitor_mode = "max"

    def __init__(self, dims: Mapping[str, int] | None = None, eos_id: int | None = None,
                 exact_match: bool = False) -> None:
        super().__init__(None, dims)
        self.eos_id, self.exact_match = eos_id, exact_match

    def loss(self, outputs: LMOutput, batch: Batch) -> Tensor:
        if outputs.loss is None:
            raise ValueError("MultimodalLM produced no loss: the batch has no conversations with answers")
        return outputs.loss

    def make_metrics(self, stage: str = "val") -> MetricCollection:
        """``answer_token_acc``: teacher-forced next-token accuracy over answer tokens (EOS excluded);
        with ``exact_match`` (the model generates in evaluation, ``eval_generate``) and outside training
        also ``answer_exact_match``: generated answer == reference after lower-casing and whitespace
        normalisation."""
        metrics = {"answer_token_acc": MeanMetric()}
        if stage != "train" and self.exact_match:
            metrics["answer_exact_match"] = MeanMetric()
        return MetricCollection(metrics)

    def update_metrics(self, metrics: MetricCollection, outputs: LMOutput, batch: Batch) -> None:
        if outputs.generated is not None and outputs.references is not None and \
                "answer_exact_match" in metrics.keys(keep_base=True):
            for generated, reference in zip(outputs.generated, outputs.references):
                metrics["answer_exact_match"].update(float(normalise(generated) == normalise(reference)))
        if outputs.labels is None:
            return
        targets = outputs.labels[:, 1:]
        answer = (targets != IGNORE_INDEX) & (targets != (-1 if self.eos_id is None else self.eos_id))
        if bool(answer.any()):
            correct = (outputs.logits[:, :-1].argmax(-1) == targets) & answer
            total = answer.sum()
            metrics["answer_token_acc"].update(correct.sum() / total, weight=total)


def normalise(text: str) -> str:
    """Lower-case, single spaces: how generated and reference answers are compared."""
    return " ".join(text.lower().split())


def load_causal_lm(source: str | Path | Mapping[str, Any] | nn.Module, vocab_size: int | None = None) -> nn.Module:
    """A causal LM from a local ``save_pretrained`` directory, a config mapping (``model_type`` + fields,
    randomly initialised), or a ready module. Nothing is downloaded (``local_files_only``)."""
    if isinstance(source, nn.Module):
        return source
    from transformers import AutoConfig, AutoModelForCausalLM

    if isinstance(source, Mapping):
        options = dict(source)
        if "model_type" not in options:
            raise ValueError(f"an LM config needs `model_type` (llama, qwen2, gpt2, ...), got keys {sorted(options)}")
        if vocab_size is not None:
            options["vocab_size"] = vocab_size
        config = AutoConfig.for_model(options.pop("model_type"), **options)
        return AutoModelForCausalLM.from_config(config)
    path = Path(source).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"language model directory not found: {path} (a save_pretrained directory)")
    return AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)


def resize_embeddings(lm: nn.Module, size: int) -> None:
    """Grow the LM's vocabulary to ``size`` (the placeholders); new input and output rows are the mean
    of the old ones -- deterministic, so a saved adapter fits any model built the same way."""
    old = lm.get_input_embeddings().num_embeddings
    if old >= size:
        return
    lm.resize_token_embeddings(size, mean_resizing=False)
    with torch.no_grad():
        for layer in (lm.get_input_embeddings(), lm.get_output_embeddings()):
            if layer is not None and layer.weight.shape[0] >= size:
                layer.weight[old:] = layer.weight[:old].mean(0)
                bias = getattr(layer, "bias", None)
                if bias is not None:
                    bias[old:] = bias[:old].mean()


class MultimodalLM(nn.Module):
    """LLaVA-style multimodal LM: ``batch -> encoders -> connector -> splice at placeholders -> causal LM``.

    Liu, Li, Wu & Lee, "Visual Instruction Tuning", NeurIPS 2023 (LLaVA); the connector may also be a
    Perceiver resampler (Flamingo, Alayrac et al. 2022) or a Q-Former (BLIP-2, Li et al. 2023).

    Inputs: ``batch.inputs[m]`` for each modality (``present=False`` = the sample lacks it) and the
    conversations in ``batch.extras[conversations_key]`` (LLaVA JSON turns, see
    :mod:`polyfuse.models.chat`). Training batches are right-padded; generation prompts left-padded.

    Args:
        lm: ``save_pretrained`` directory, config mapping (``model_type: llama`` ...) or module.
        encoders: modality -> polyfuse encoder (``out_dim``; ``Encoded`` tokens).
        connector: a :class:`~polyfuse.fusion.connectors.Connector` or a factory called as
            ``connector(dims={m: encoder width}, out_dim=LM hidden size)``.
        tokenizer: a tokenizer, its directory or a ``tokenizer.json``; default: the ``lm`` directory's.
        placeholders: modality -> placeholder token (added to the tokenizer as special tokens).
        template: the :class:`~polyfuse.models.chat.ChatTemplate` (or its fields as a mapping).
        stage: ``1`` (connector only) or ``2`` (connector + LoRA adapters when ``lora`` is set, else the
            whole LM); encoders stay frozen unless ``train_encoders``. lora: :func:`polyfuse.models.lora.add_lora`
            options for stage 2. connector_checkpoint: start the connector from this checkpoint (stage 1's).
        modalities: which encoders to use (default: all). max_length: spliced sequences are cut to it.
        conversations_key: extras key of the conversations.
        eval_generate: outside training, also answer each conversation's last question greedily with
            up to this many new tokens (``LMOutput.generated``, metric ``answer_exact_match``); 0 = off.
    """

    def __init__(self, lm: str | Path | Mapping[str, Any] | nn.Module, encoders: Mapping[str, nn.Module],
                 connector: Connector | Callable[..., Connector], tokenizer: Any = None,
                 placeholders: Mapping[str, str] | None = None, template: ChatTemplate | Mapping[str, Any] | None = None,
                 stage: int = 1, lora: Mapping[str, Any] | None = None, modalities: Sequence[str] | None = None,
                 max_length: int = 2048, conversations_key: str = "conversations",
                 train_encoders: bool = False, connector_checkpoint: str | Path | None = None,
                 eval_generate: int = 0) -> None:
        super().__init__()
        if stage not in (1, 2):
            raise ValueError(f"MultimodalLM stage must be 1 (connector only) or 2 (connector + LoRA), got {stage}")
        if tokenizer is None and not isinstance(lm, (str, Path)):
            raise ValueError("MultimodalLM needs a tokenizer when `lm` is not a save_pretrained directory")
        self.tokenizer = load_chat_tokenizer(lm if tokenizer is None else tokenizer)
        self.modalities = list(encoders) if modalities is None else list(modalities)
        missing = [m for m in self.modalities if m not in encoders]
        if missing:
            raise KeyError(f"no encoder configured for modalities {missing}; configured: {list(encoders)}")
        placeholders = dict(DEFAULT_PLACEHOLDERS if placeholders is None else placeholders)
        unset = [m for m in self.modalities if m not in placeholders]
        if unset:
            raise KeyError(f"no placeholder token for modalities {unset}; set model.placeholders.{unset[0]}")
        self.placeholders = {m: placeholders[m] for m in self.modalities}
        new = [t for t in self.placeholders.values() if t not in self.tokenizer.get_vocab()]
        if new:
            self.tokenizer.add_special_tokens({"additional_special_tokens": new})
        self.placeholder_ids = {m: int(self.tokenizer.convert_tokens_to_ids(t)) for m, t in self.placeholders.items()}
        self.template = template if isinstance(template, ChatTemplate) else ChatTemplate(**dict(template or {}))
        self.lm = load_causal_lm(lm, vocab_size=len(self.tokenizer) if isinstance(lm, Mapping) else None)
        resize_embeddings(self.lm, len(self.tokenizer))
        self.hidden_size = int(self.lm.get_input_embeddings().embedding_dim)
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        dims = {m: int(self.encoders[m].out_dim) for m in self.modalities}
        self.connector = connector if isinstance(connector, nn.Module) else connector(dims=dims, out_dim=self.hidden_size)
        if getattr(self.connector, "out_dim", self.hidden_size) != self.hidden_size:
            raise ValueError(f"connector out_dim {self.connector.out_dim} != the LM's hidden size {self.hidden_size}")
        self.head = LanguageModelingHead(dims, self.tokenizer.eos_token_id, exact_match=int(eval_generate) > 0)
        self.stage, self.max_length, self.conversations_key = stage, int(max_length), conversations_key
        self.lm.requires_grad_(False)
        self.encoders.requires_grad_(train_encoders)
        self.train_encoders, self.eval_generate = train_encoders, int(eval_generate)
        if connector_checkpoint is not None:
            self.load_connector(connector_checkpoint)
        if stage == 2 and lora is not None:
            self.lm = lora_lib.add_lora(self.lm, **dict(lora))
        elif stage == 2:
            self.lm.requires_grad_(True)  # LLaVA's stage 2 without LoRA: the full LM trains

    def load_connector(self, path: str | Path) -> None:
        """Connector weights from a training checkpoint (``model.connector.*`` of a Lightning ``.ckpt``)
        or a plain connector state dict -- stage 2 starts from stage 1's connector."""
        state = torch.load(str(path), map_location="cpu", weights_only=False)
        state = state.get("state_dict", state)
        prefix = next((p for p in ("model.connector.", "connector.") if any(k.startswith(p) for k in state)), "")
        own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} if prefix else state
        self.connector.load_state_dict(own)

    def train(self, mode: bool = True) -> "MultimodalLM":
        """Frozen parts stay in eval mode (no dropout, no BatchNorm statistics updates): the encoders
        unless ``train_encoders``, and the LM in stage 1."""
        super().train(mode)
        if not self.train_encoders:
            self.encoders.eval()
        if self.stage == 1:
            self.lm.eval()
        return self

    # ----------------------------------------------------------------------------------------- LoRA
    def save_lora(self, directory: str | Path) -> Path:
        """Write the LoRA adapters alone (``adapter_model.safetensors`` + config) to ``directory``."""
        return lora_lib.save_lora(self.lm, directory)

    def load_lora(self, directory: str | Path, trainable: bool = False) -> None:
        """Attach adapters saved by :meth:`save_lora` to the (plain) LM."""
        if lora_lib.has_lora(self.lm):
            raise ValueError("this model already has LoRA adapters; merge_lora() or build it with stage=1")
        self.lm = lora_lib.load_lora(self.lm, directory, trainable)

    def merge_lora(self) -> None:
        """Fold the adapters into the LM's weights; the model then has no ``peft`` wrapper."""
        self.lm = lora_lib.merge_lora(self.lm)

    # -------------------------------------------------------------------------------------- encoding
    def encode(self, batch: Batch) -> dict[str, Encoded]:
        """Connector tokens ``{m: Encoded (B, N_m, hidden)}`` for the modalities of ``batch``."""
        names = [m for m in self.modalities if m in batch.inputs]
        encoded = {m: self.encoders[m](batch.inputs[m]) for m in names}
        return self.connector.connect(encoded) if encoded else {}

    def tokenize(self, conversations: Sequence[Sequence[Mapping[str, Any]]],
                 generation: bool = False) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids and answer-only labels per conversation (:meth:`ChatTemplate.encode`)."""
        pairs = [self.template.encode(c, self.tokenizer, generation) for c in conversations]
        return [ids for ids, _ in pairs], [labels for _, labels in pairs]

    def splice(self, ids: Sequence[Sequence[int]], features: Mapping[str, Encoded],
               labels: Sequence[Sequence[int]] | None = None, padding_side: str = "right") -> Spliced:
        """Replace each placeholder id by its modality's valid tokens for that sample (none if absent).

        A present modality without a placeholder in the sample's text is an error (never dropped silently).

        ``ids``: per-sample token ids (unpadded). ``features``: connector outputs. Spliced tokens get
        label ``-100``; sequences are padded on ``padding_side`` and cut to ``max_length``.
        """
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        embed = self.lm.get_input_embeddings()
        device = embed.weight.device
        owner = {index: m for m, index in self.placeholder_ids.items()}
        rows: list[Tensor] = []
        row_labels: list[Tensor] = []
        for b, sample in enumerate(ids):
            sample_ids = torch.as_tensor(list(sample), dtype=torch.long, device=device)
            text = embed(sample_ids)
            target = torch.as_tensor(list(labels[b]), dtype=torch.long, device=device) if labels is not None else None
            pieces, piece_labels, start, seen = [], [], 0, set()
            for position, token in enumerate(sample_ids.tolist()):
                if token not in owner:
                    continue
                modality = owner[token]
                if modality in seen:
                    raise ValueError(f"sample {b} has more than one {self.placeholders[modality]} placeholder; "
                                     "one per modality is supported")
                seen.add(modality)
                pieces.append(text[start:position])
                if target is not None:
                    piece_labels.append(target[start:position])
                start = position + 1
                value = features.get(modality)
                if value is None or not bool(value.present_or_full()[b]):
                    continue  # the sample lacks this modality: no token at all
                tokens = value.tokens[b][value.mask_or_full()[b]].to(text.dtype)
                pieces.append(tokens)
                piece_labels.append(torch.full((tokens.shape[0],), IGNORE_INDEX, dtype=torch.long, device=device))
            unplaced = [m for m, value in features.items() if m not in seen and bool(value.present_or_full()[b])]
            if unplaced:
                raise ValueError(f"sample {b} has {unplaced} but its text has no {[self.placeholders[m] for m in unplaced]} "
                                 "placeholder; put one where the modality's tokens belong")
            pieces.append(text[start:])
            rows.append(torch.cat(pieces)[: self.max_length])
            if target is not None:
                piece_labels.append(target[start:])
                row_labels.append(torch.cat(piece_labels)[: self.max_length])
        longest = max(row.shape[0] for row in rows)
        batch = len(rows)
        inputs_embeds = rows[0].new_zeros(batch, longest, self.hidden_size)
        attention_mask = torch.zeros(batch, longest, dtype=torch.long, device=device)
        out_labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long, device=device)
        for b, row in enumerate(rows):
            span = slice(0, row.shape[0]) if padding_side == "right" else slice(longest - row.shape[0], longest)
            inputs_embeds[b, span] = row
            attention_mask[b, span] = 1
            if labels is not None:
                out_labels[b, span] = row_labels[b]
        position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        return Spliced(inputs_embeds, attention_mask, position_ids, out_labels if labels is not None else None)

    # ------------------------------------------------------------------------------ forward / generate
    def conversations(self, batch: Batch) -> list[Any]:
        found = batch.extras.get(self.conversations_key)
        if found is None:
            raise KeyError(f"batch.extras has no {self.conversations_key!r} (the conversations); it has "
                           f"{sorted(batch.extras)}; readers such as polyfuse.data.LlavaConversationReader provide it")
        return list(found)

    def forward(self, batch: Batch, return_attention: bool = False) -> ModelOutput:
        """Teacher-forced pass over the batch's conversations; ``outputs`` is an :class:`LMOutput`."""
        features = self.encode(batch)
        conversations = self.conversations(batch)
        ids, labels = self.tokenize(conversations)
        spliced = self.splice(ids, features, labels, padding_side="right")
        outputs = self.language_model(spliced)
        if self.eval_generate and not self.training:
            prompts, _ = self.tokenize(conversations, generation=True)
            rows = self.generate_ids(prompts, features, max_new_tokens=self.eval_generate)
            outputs.generated = [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]
            outputs.references = [last_answer(c) for c in conversations]
        return ModelOutput(encoded=features, fused=None, outputs=outputs)

    def language_model(self, spliced: Spliced) -> LMOutput:
        """Run the LM on spliced inputs; the loss (with labels) is the mean over answer tokens."""
        logits = self.lm(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                         position_ids=spliced.position_ids).logits
        loss = None
        if spliced.labels is not None:
            targets = spliced.labels[:, 1:]
            if bool((targets != IGNORE_INDEX).any()):
                loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                       ignore_index=IGNORE_INDEX)
        return LMOutput(logits=logits, loss=loss, labels=spliced.labels)

    @torch.no_grad()
    def generate(self, batch: Batch, max_new_tokens: int = 16, **options: Any) -> list[str]:
        """Greedy answers to the last user turn of each conversation, batched with left padding
        through the LM's ``generate`` (KV cache). ``options`` go to ``generate``."""
        ids, _ = self.tokenize(self.conversations(batch), generation=True)
        tokens = self.generate_ids(ids, self.encode(batch), max_new_tokens, **options)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in tokens]

    @torch.no_grad()
    def generate_ids(self, ids: Sequence[Sequence[int]], features: Mapping[str, Encoded], max_new_tokens: int = 16,
                     **options: Any) -> list[list[int]]:
        """New token ids per prompt (cut after EOS) for unpadded prompt ``ids`` with placeholders."""
        spliced = self.splice(ids, features, padding_side="left")
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        settings = {"suppress_tokens": sorted(self.placeholder_ids.values()), "do_sample": False, "num_beams": 1, "max_new_tokens": max_new_tokens, "eos_token_id": eos,
                    "pad_token_id": pad, **options}
        out = self.lm.generate(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, **settings)
        rows = []
        for row in out.tolist():
            rows.append(row[: row.index(eos) + 1] if eos in row else row)
        return rows

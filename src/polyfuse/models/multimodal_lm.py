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

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.batch import Batch, Encoded
from polyfuse.fusion.connectors import Connector
from polyfuse.models import lora as lora_lib
from polyfuse.models.causal_lm import context_length, load_causal_lm, resize_embeddings
from polyfuse.models.chat import IGNORE_INDEX, ChatTemplate, TokenizerChatTemplate, answer_types, load_chat_tokenizer
from polyfuse.models.lm_attention import run_with_attention
from polyfuse.models.lm_head import LanguageModelingHead, LMOutput
from polyfuse.models.multimodal import ModelOutput
from polyfuse.models.multimodal_lm_eval import EVAL_TURNS, generate_answers

__all__ = ["MultimodalLM", "LMOutput", "LanguageModelingHead", "Spliced", "load_causal_lm", "context_length"]

DEFAULT_PLACEHOLDERS = {"image": "<image>", "audio": "<audio>"}


@dataclass
class Spliced:
    """The LM's input after splicing: ``inputs_embeds (B, L, H)``, ``attention_mask (B, L)`` (1 = real),
    ``position_ids (B, L)`` (counting real tokens only), ``labels (B, L)`` or ``None``; ``spans``: per
    sample, modality -> ``(start, end)`` of its spliced tokens in the padded row (absent: no entry);
    ``truncated``: how many samples were cut to ``max_length``."""

    inputs_embeds: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    labels: Tensor | None
    spans: list[dict[str, tuple[int, int]]] = field(default_factory=list)
    truncated: int = 0


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
        template: the :class:`~polyfuse.models.chat.ChatTemplate` (or its fields as a mapping), or
            ``"tokenizer"``: the tokenizer's own chat template (:class:`~polyfuse.models.chat.TokenizerChatTemplate`).
        stage: ``1`` (connector only) or ``2`` (connector + LoRA adapters when ``lora`` is set, else the
            whole LM); encoders stay frozen unless ``train_encoders``. lora: :func:`polyfuse.models.lora.add_lora`
            options for stage 2. connector_checkpoint: start the connector from this checkpoint (stage 1's).
        modalities: which encoders to use (default: all).
        max_length: longest spliced sequence (at most the LM's context). A longer training sample loses
            its end (text, answers included; labels cut alike) with a warning naming it, counted in
            ``truncated``; a longer generation prompt is an error.
        conversations_key: extras key of the conversations.
        eval_generate: outside training, also answer each conversation's questions with up to this
            many new tokens (``LMOutput.generated``; metrics ``answer_exact_match``, ``answer_vqa_acc``,
            see :mod:`polyfuse.models.multimodal_lm_eval`); 0 = off.
        eval_num_beams: how ``eval_generate`` decodes: 1 = greedy, more = beam search with that many
            beams (the best beam, as :meth:`generate`).
        eval_turns: which questions ``eval_generate`` answers: ``"all"`` (each with the conversation up
            to it as prompt) or ``"last"`` (each conversation's final question).
        question_types: answer types (the ``"type"`` of assistant turns) that get their own metrics.
        caption_types: answer types scored as captions too (BLEU, METEOR, ROUGE-L, CIDEr-D; needs Java).
    """

    def __init__(self, lm: str | Path | Mapping[str, Any] | nn.Module, encoders: Mapping[str, nn.Module],
                 connector: Connector | Callable[..., Connector], tokenizer: Any = None,
                 placeholders: Mapping[str, str] | None = None,
                 template: ChatTemplate | TokenizerChatTemplate | Mapping[str, Any] | str | None = None,
                 stage: int = 1, lora: Mapping[str, Any] | None = None, modalities: Sequence[str] | None = None,
                 max_length: int = 2048, conversations_key: str = "conversations",
                 train_encoders: bool = False, connector_checkpoint: str | Path | None = None,
                 eval_generate: int = 0, eval_num_beams: int = 1, eval_turns: str = "all",
                 question_types: Sequence[str] | None = None, caption_types: Sequence[str] | None = None) -> None:
        super().__init__()
        if stage not in (1, 2):
            raise ValueError(f"MultimodalLM stage must be 1 (connector only) or 2 (connector + LoRA), got {stage}")
        if int(eval_num_beams) < 1:
            raise ValueError(f"MultimodalLM eval_num_beams must be >= 1 (1 = greedy), got {eval_num_beams}")
        if eval_turns not in EVAL_TURNS:
            raise ValueError(f"MultimodalLM eval_turns must be one of {EVAL_TURNS}, got {eval_turns!r}")
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
        if template == "tokenizer":
            template = TokenizerChatTemplate()
            template.check(self.tokenizer)
        self.template = template if isinstance(template, (ChatTemplate, TokenizerChatTemplate)) \
            else ChatTemplate(**dict(template or {}))
        self.lm = load_causal_lm(lm, vocab_size=len(self.tokenizer) if isinstance(lm, Mapping) else None)
        resize_embeddings(self.lm, len(self.tokenizer))
        self.hidden_size = int(self.lm.get_input_embeddings().embedding_dim)
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        dims = {m: int(self.encoders[m].out_dim) for m in self.modalities}
        self.connector = connector if isinstance(connector, nn.Module) else connector(dims=dims, out_dim=self.hidden_size)
        if getattr(self.connector, "out_dim", self.hidden_size) != self.hidden_size:
            raise ValueError(f"connector out_dim {self.connector.out_dim} != the LM's hidden size {self.hidden_size}")
        self.head = LanguageModelingHead(dims, self.tokenizer.eos_token_id, exact_match=int(eval_generate) > 0,
                                         question_types=question_types, caption_types=caption_types)
        context = context_length(self.lm)
        self.max_length = int(max_length) if context is None else min(int(max_length), context)
        self.stage, self.conversations_key, self.truncated = stage, conversations_key, 0
        self.lm.requires_grad_(False)
        self.encoders.requires_grad_(train_encoders)
        self.train_encoders, self.eval_generate = train_encoders, int(eval_generate)
        self.eval_num_beams, self.eval_turns = int(eval_num_beams), eval_turns
        if connector_checkpoint is not None:
            self.load_connector(connector_checkpoint)
        if stage == 2 and lora is not None:
            self.lm = lora_lib.add_lora(self.lm, **dict(lora))
        elif stage == 2:
            self.lm.requires_grad_(True)  # LLaVA's stage 2 without LoRA: the full LM trains
        # frozen parts start in eval mode too: Lightning records each submodule's mode and sets it back
        # flag by flag (not through train()), which would otherwise update a frozen BatchNorm's statistics
        self.train(self.training)

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
               labels: Sequence[Sequence[int]] | None = None, padding_side: str = "right",
               names: Sequence[str] | None = None, limit: int | None = None) -> Spliced:
        """Replace each placeholder id by its modality's valid tokens for that sample (none if absent).

        ``ids``: per-sample token ids (unpadded). ``features``: connector outputs. Spliced tokens get
        label ``-100``; sequences are padded on ``padding_side``. ``names``: the samples' ids, for
        errors. A present modality without a placeholder, or a modality with more placeholders than
        the sample has items of it (one), is an error naming the sample. A row longer than ``limit``
        (default ``max_length``) is cut at its end with a warning naming the sample (``truncated``
        counts them) when ``labels`` are given (training), and is an error for a generation prompt.
        """
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        limit = self.max_length if limit is None else limit
        embed = self.lm.get_input_embeddings()
        device = embed.weight.device
        owner = {index: m for m, index in self.placeholder_ids.items()}
        rows: list[Tensor] = []
        row_labels: list[Tensor] = []
        spans: list[dict[str, tuple[int, int]]] = []
        truncated = 0
        for b, sample in enumerate(ids):
            name = f"sample {b}" + (f" (id {names[b]!r})" if names is not None and b < len(names) else "")
            sample_ids = torch.as_tensor(list(sample), dtype=torch.long, device=device)
            text = embed(sample_ids)
            target = torch.as_tensor(list(labels[b]), dtype=torch.long, device=device) if labels is not None else None
            pieces, piece_labels, start, length, own = [], [], 0, 0, {}
            counts = {m: 0 for m in self.placeholder_ids}
            for position, token in enumerate(sample_ids.tolist()):
                if token not in owner:
                    continue
                modality = owner[token]
                counts[modality] += 1
                if counts[modality] > 1:
                    total = sample_ids.tolist().count(token)
                    raise ValueError(f"{name} has {total} {self.placeholders[modality]} placeholders but one "
                                     f"{modality} input; one placeholder per modality is supported")
                pieces.append(text[start:position])
                length += position - start
                if target is not None:
                    piece_labels.append(target[start:position])
                start = position + 1
                value = features.get(modality)
                if value is None or not bool(value.present_or_full()[b]):
                    continue  # the sample lacks this modality: no token at all
                tokens = value.tokens[b][value.mask_or_full()[b]].to(text.dtype)
                pieces.append(tokens)
                own[modality] = (length, length + tokens.shape[0])
                length += tokens.shape[0]
                piece_labels.append(torch.full((tokens.shape[0],), IGNORE_INDEX, dtype=torch.long, device=device))
            unplaced = [m for m, value in features.items() if not counts.get(m) and bool(value.present_or_full()[b])]
            if unplaced:
                raise ValueError(f"{name} has {unplaced} but its text has no {[self.placeholders[m] for m in unplaced]} "
                                 "placeholder; put one where the modality's tokens belong")
            pieces.append(text[start:])
            row = torch.cat(pieces)
            if target is not None:
                piece_labels.append(target[start:])
            if row.shape[0] > limit:
                if labels is None:
                    raise ValueError(f"{name} is {row.shape[0]} tokens long after splicing, more than the "
                                     f"{limit} the language model can take here (max_length / its context, "
                                     "less the new tokens); shorten the prompt")
                truncated += 1
                cut = torch.cat(piece_labels)[limit:]
                warnings.warn(f"{name} is {row.shape[0]} tokens long after splicing; cut to max_length={limit} "
                              f"({int((cut != IGNORE_INDEX).sum())} answer tokens dropped)", stacklevel=2)
            rows.append(row[:limit])
            if target is not None:
                row_labels.append(torch.cat(piece_labels)[:limit])
            spans.append({m: (lo, min(hi, limit)) for m, (lo, hi) in own.items() if lo < limit})
        longest = max(row.shape[0] for row in rows)
        batch = len(rows)
        inputs_embeds = rows[0].new_zeros(batch, longest, self.hidden_size)
        attention_mask = torch.zeros(batch, longest, dtype=torch.long, device=device)
        out_labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long, device=device)
        for b, row in enumerate(rows):
            offset = 0 if padding_side == "right" else longest - row.shape[0]
            span = slice(offset, offset + row.shape[0])
            inputs_embeds[b, span] = row
            attention_mask[b, span] = 1
            if labels is not None:
                out_labels[b, span] = row_labels[b]
            spans[b] = {m: (lo + offset, hi + offset) for m, (lo, hi) in spans[b].items()}
        position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        self.truncated += truncated
        return Spliced(inputs_embeds, attention_mask, position_ids, out_labels if labels is not None else None, spans,
                       truncated)

    # ------------------------------------------------------------------------------ forward / generate
    def conversations(self, batch: Batch) -> list[Any]:
        found = batch.extras.get(self.conversations_key)
        if found is None:
            raise KeyError(f"batch.extras has no {self.conversations_key!r} (the conversations); it has "
                           f"{sorted(batch.extras)}; readers such as polyfuse.data.LlavaConversationReader provide it")
        return list(found)

    def prepare(self, batch: Batch) -> tuple[dict[str, Encoded], list[Any], Spliced]:
        """Connector tokens, conversations and the right-padded, labelled LM input of a training batch."""
        features = self.encode(batch)
        conversations = self.conversations(batch)
        ids, labels = self.tokenize(conversations)
        return features, conversations, self.splice(ids, features, labels, "right", names=batch.ids)

    def forward(self, batch: Batch, return_attention: bool = False) -> ModelOutput:
        """Teacher-forced pass over the batch's conversations; ``outputs`` is an :class:`LMOutput`.
        ``return_attention``: ``attentions`` holds :meth:`attention_maps`' maps of this pass."""
        features, conversations, spliced = self.prepare(batch)
        attentions: dict[str, Any] = {}
        if return_attention:
            outputs, attentions = run_with_attention(self, spliced)
        else:
            outputs = self.language_model(spliced)
        outputs.answer_types = [answer_types(c) for c in conversations]
        if self.eval_generate and not self.training:
            answers = generate_answers(self, conversations, features, names=batch.ids)
            outputs.generated, outputs.references = answers.generated, answers.references
            outputs.reference_answers, outputs.reference_types = answers.reference_answers, answers.reference_types
            outputs.generated_from = answers.sources
        return ModelOutput(encoded=features, fused=None, outputs=outputs, attentions=attentions)

    def attention_maps(self, batch: Batch) -> dict[str, Tensor]:
        """The LM's attention over each modality's spliced tokens, layer by layer, as return values:
        ``{"text->{m}/layer{i}": (B, H, L, N_m)}`` (see :mod:`polyfuse.models.lm_attention`)."""
        with torch.no_grad():
            return self(batch, return_attention=True).attentions

    def language_model(self, spliced: Spliced, **options: Any) -> LMOutput:
        """Run the LM on spliced inputs; the loss (with labels) is the mean over answer tokens."""
        result = self.lm(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                         position_ids=spliced.position_ids, **options)
        logits = result.logits
        loss = None
        if spliced.labels is not None:
            targets = spliced.labels[:, 1:]
            if bool((targets != IGNORE_INDEX).any()):
                loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                       ignore_index=IGNORE_INDEX)
        return LMOutput(logits=logits, loss=loss, labels=spliced.labels, truncated=spliced.truncated,
                        layer_attentions=getattr(result, "attentions", None))

    @torch.no_grad()
    def generate(self, batch: Batch, max_new_tokens: int = 16, num_beams: int = 1, **options: Any) -> list[str]:
        """Answers to the last user turn of each conversation, batched with left padding through the
        LM's ``generate`` (KV cache): greedy, or beam search with ``num_beams > 1`` (the best beam).
        ``options`` go to ``generate`` (``length_penalty``, ``use_cache``, ...)."""
        ids, _ = self.tokenize(self.conversations(batch), generation=True)
        tokens = self.generate_ids(ids, self.encode(batch), max_new_tokens, num_beams=num_beams,
                                   names=batch.ids, **options)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in tokens]

    @torch.no_grad()
    def generate_ids(self, ids: Sequence[Sequence[int]], features: Mapping[str, Encoded], max_new_tokens: int = 16,
                     num_beams: int = 1, names: Sequence[str] | None = None, **options: Any) -> list[list[int]]:
        """New token ids per prompt (cut after EOS) for unpadded prompt ``ids`` with placeholders.
        A prompt that leaves no room for ``max_new_tokens`` in ``max_length`` is an error naming it."""
        spliced = self.splice(ids, features, padding_side="left", names=names,
                              limit=max(self.max_length - max_new_tokens, 1))
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        settings = {"suppress_tokens": sorted(self.placeholder_ids.values()), "do_sample": False,
                    "num_beams": int(num_beams), "max_new_tokens": max_new_tokens, "eos_token_id": eos,
                    "pad_token_id": pad, **options}
        out = self.lm.generate(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, **settings)
        rows = []
        for row in out.tolist():
            rows.append(row[: row.index(eos) + 1] if eos in row else row)
        return rows

"""Conversations -> token ids and answer-only labels for :class:`~polyfuse.models.MultimodalLM`.

A conversation is LLaVA's list of turns ``[{"from": "human", "value": "<image>\\nWhat digit?"},
{"from": "gpt", "value": "seven"}, ...]`` (``"user"`` / ``"assistant"`` and ``"role"`` /
``"content"`` keys are accepted too). :class:`ChatTemplate` lays it out as::

    <bos>{system}USER: {human turn} ASSISTANT: {answer}<eos>USER: ... ASSISTANT: {answer}<eos>

(LLaVA-1.5's Vicuna-v1 layout). Each piece is tokenised on its own, so the labels are exact:
every token of the system prompt, of the user turns and of the ``ASSISTANT:`` prefix is ``-100``;
the answer tokens and the closing ``<eos>`` are their own ids. Placeholders (``<image>``,
``<audio>``) are special tokens of the tokenizer, so each is one id, later replaced by the
modality's tokens (or by nothing when the sample lacks the modality).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

IGNORE_INDEX = -100
USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant")

__all__ = ["ChatTemplate", "IGNORE_INDEX", "TokenizerChatTemplate", "answer_types", "last_answer", "load_chat_tokenizer",
           "turns"]


def load_chat_tokenizer(source: Any) -> Any:
    """A Hugging Face tokenizer: a ready one, a ``save_pretrained`` directory, or a ``tokenizer.json``.

    A bare ``tokenizer.json`` (e.g. AV-digits' word-level one) gets ``<s>`` / ``</s>`` as BOS / EOS
    and its ``[PAD]`` / ``<pad>`` as padding, added where the vocabulary lacks them.
    """
    if not isinstance(source, (str, Path)):
        return source
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(source).expanduser()
    if path.is_dir():
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer not found: {path} (a save_pretrained directory or a tokenizer.json)")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path))
    vocab = tokenizer.get_vocab()
    pad = next((t for t in ("[PAD]", "<pad>", "<|endoftext|>") if t in vocab), "<pad>")
    unk = next((t for t in ("[UNK]", "<unk>") if t in vocab), None)
    tokenizer.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>", "pad_token": pad,
                                  **({"unk_token": unk} if unk else {})})
    return tokenizer


def turns(conversation: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``[(role, text)]`` with role ``"user"`` or ``"assistant"``; unknown roles raise naming the turn."""
    out = []
    for index, turn in enumerate(conversation):
        role = str(turn.get("from", turn.get("role", ""))).lower()
        text = turn.get("value", turn.get("content"))
        if role in USER_ROLES:
            role = "user"
        elif role in ASSISTANT_ROLES:
            role = "assistant"
        elif role != "system":
            raise ValueError(f"conversation turn {index} has role {role!r}; expected one of "
                             f"{USER_ROLES + ASSISTANT_ROLES} or 'system'")
        if not isinstance(text, str):
            raise ValueError(f"conversation turn {index} has no text ('value' / 'content'), got {text!r}")
        out.append((role, text))
    return out


def last_answer(conversation: Sequence[Mapping[str, Any]]) -> str:
    """The text of the conversation's final assistant turn ("" when it has none)."""
    answers = [text for role, text in turns(conversation) if role == "assistant"]
    return answers[-1].strip() if answers else ""


def answer_types(conversation: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """The ``"type"`` field of each assistant turn, in order (``None`` where a turn has none): metrics
    per question type (AV-digits' ``written`` / ``spoken`` / ``both``)."""
    return [turn.get("type") for turn in conversation
            if str(turn.get("from", turn.get("role", ""))).lower() in ASSISTANT_ROLES]


@dataclass
class ChatTemplate:
    """How a conversation becomes text; see the module docstring for the layout.

    Args:
        system: text before the first turn (masked); a ``system`` turn in the conversation replaces it.
        user: format of a user turn (``{text}`` is the turn). assistant: the prefix of an answer
            (masked). separator: text after an answer's ``<eos>`` (masked; LLaVA-1.5: none).
        add_bos: start with the tokenizer's BOS token (when it has one).
    """

    system: str = "A chat between a user and an assistant. "
    user: str = "USER: {text} "
    assistant: str = "ASSISTANT:"
    separator: str = ""
    add_bos: bool = True

    def encode(self, conversation: Sequence[Mapping[str, Any]], tokenizer: Any,
               generation: bool = False) -> tuple[list[int], list[int]]:
        """``(ids, labels)``: labels are the answer ids (+ EOS) and ``-100`` elsewhere.

        ``generation=True``: the prompt for the next answer -- a final assistant turn, if any, is
        dropped and the conversation ends with the assistant prefix.
        """
        parts = turns(conversation)
        if generation and parts and parts[-1][0] == "assistant":
            parts = parts[:-1]
        ids: list[int] = []
        labels: list[int] = []

        def add(text: str, learn: bool) -> None:
            if text:
                piece = tokenizer.encode(text, add_special_tokens=False)
                ids.extend(piece)
                labels.extend(piece if learn else [IGNORE_INDEX] * len(piece))

        if self.add_bos and tokenizer.bos_token_id is not None:
            ids.append(int(tokenizer.bos_token_id))
            labels.append(IGNORE_INDEX)
        system = next((text for role, text in parts if role == "system"), self.system)
        add(system, False)
        for role, text in parts:
            if role == "user":
                add(self.user.format(text=text), False)
            elif role == "assistant":
                add(self.assistant, False)
                add(" " + text.strip(), True)
                if tokenizer.eos_token_id is None:
                    raise ValueError("the tokenizer has no EOS token; answers need one to end")
                ids.append(int(tokenizer.eos_token_id))
                labels.append(int(tokenizer.eos_token_id))
                add(self.separator, False)
        if generation:
            add(self.assistant, False)
        return ids, labels


@dataclass
class TokenizerChatTemplate:
    """The tokenizer's own Jinja chat template (``tokenizer.apply_chat_template``), e.g. a Qwen2 or Llama-3
    instruct model's. The labels come from the template's ``{% generation %}`` ... ``{% endgeneration %}``
    markers around the answers (Hugging Face's ``return_assistant_tokens_mask``): what they enclose is
    learned, everything else is ``-100``. A tokenizer without a chat template, or a template without
    those markers, is an error naming the tokenizer (answers cannot be told from prompts otherwise).
    ``MultimodalLM(template="tokenizer")`` selects it.
    """

    def check(self, tokenizer: Any) -> None:
        """Raise unless ``tokenizer`` has a chat template."""
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__!r} has "
                             "no chat template (chat_template.jinja / tokenizer_config.json 'chat_template'); use "
                             "polyfuse's ChatTemplate (model.template: {user: ..., assistant: ...}) instead")

    def encode(self, conversation: Sequence[Mapping[str, Any]], tokenizer: Any,
               generation: bool = False) -> tuple[list[int], list[int]]:
        """``(ids, labels)`` as :meth:`ChatTemplate.encode`, laid out by the tokenizer's template."""
        self.check(tokenizer)
        messages = [{"role": role, "content": text} for role, text in turns(conversation)]
        if generation and messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=not generation,
                                            add_generation_prompt=generation)
        ids = [int(t) for t in out["input_ids"]]
        if generation:
            return ids, [IGNORE_INDEX] * len(ids)
        mask = list(out["assistant_masks"])
        if any(m["role"] == "assistant" for m in messages) and not any(mask):
            raise ValueError(f"the chat template of tokenizer {getattr(tokenizer, 'name_or_path', '')!r} marks no "
                             "answer tokens: put {% generation %} ... {% endgeneration %} around each assistant "
                             "message (with its end-of-turn token) so only answers are learned")
        return ids, [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]

"""Generated answers of :class:`~polyfuse.models.MultimodalLM` in evaluation: one per question, scored.

With ``eval_generate=N`` the model answers, outside training, **every** question of each conversation
(``eval_turns="all"``; ``"last"``: only the final one). The prompt for answer ``k`` is the
conversation up to its ``k``-th question, earlier answers being the references (teacher-forced
history, as the loss sees them). A modality whose placeholder comes only after that question is not
spliced into its prompt: the LM has not seen it yet at that point of the conversation, exactly as in
the teacher-forced pass.

References: an assistant turn's ``"value"``, and for the VQA accuracy its ``"answers"`` list when it
has one (VQA's ten human answers, in a converted VQA record); caption-like answers (the types in
``caption_types``) are scored with the caption metrics against the same references.
:class:`~polyfuse.models.lm_head.LanguageModelingHead` computes the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from polyfuse.batch import Encoded
from polyfuse.models.chat import answer_types, turns

if TYPE_CHECKING:
    from polyfuse.models.multimodal_lm import MultimodalLM

__all__ = ["EVAL_TURNS", "GeneratedAnswers", "answer_prompts", "answer_references", "generate_answers"]

EVAL_TURNS = ("all", "last")


@dataclass
class GeneratedAnswers:
    """Flat over (sample, answer): ``generated[i]`` answers question ``sources[i] = (sample, k)``
    (the sample's ``k``-th answer turn); ``references[i]`` its reference text, ``reference_answers[i]``
    every reference (``"answers"`` or ``[value]``), ``reference_types[i]`` its ``"type"``."""

    generated: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    reference_answers: list[list[str]] = field(default_factory=list)
    reference_types: list[str | None] = field(default_factory=list)
    sources: list[tuple[int, int]] = field(default_factory=list)


def answer_references(turn: Mapping[str, Any]) -> list[str]:
    """An assistant turn's references: its ``"answers"`` (a non-empty list of strings) or ``[value]``."""
    answers = turn.get("answers")
    if isinstance(answers, (list, tuple)) and answers and all(isinstance(a, str) for a in answers):
        return [a.strip() for a in answers]
    return [str(turn.get("value", turn.get("content", ""))).strip()]


def answer_prompts(conversation: Sequence[Mapping[str, Any]], eval_turns: str = "all"
                   ) -> list[tuple[int, list[Mapping[str, Any]]]]:
    """``[(k, prefix)]``: for the conversation's ``k``-th answer turn, the turns up to and including it
    (the chat template's ``generation=True`` drops that answer and ends with the assistant prefix).
    ``eval_turns="last"``: only the final answer."""
    if eval_turns not in EVAL_TURNS:
        raise ValueError(f"MultimodalLM eval_turns must be one of {EVAL_TURNS}, got {eval_turns!r}")
    roles = [role for role, _ in turns(conversation)]
    ends = [index for index, role in enumerate(roles) if role == "assistant"]
    prompts = [(k, list(conversation[:end + 1])) for k, end in enumerate(ends)]
    return prompts[-1:] if eval_turns == "last" else prompts


def _rows(features: Mapping[str, Encoded], rows: Sequence[int], prompts: Sequence[Sequence[int]],
          placeholder_ids: Mapping[str, int]) -> dict[str, Encoded]:
    """``features`` of the samples ``rows`` (one row per prompt), a modality marked absent in a prompt
    that does not (yet) hold its placeholder."""
    out = {}
    for modality, value in features.items():
        index = list(rows)
        holds = [placeholder_ids[modality] in prompt for prompt in prompts]
        present = value.present_or_full()[index] & value.present_or_full().new_tensor(holds)
        out[modality] = Encoded(value.tokens[index], value.mask_or_full()[index], present)
    return out


def generate_answers(model: "MultimodalLM", conversations: Sequence[Sequence[Mapping[str, Any]]],
                     features: Mapping[str, Encoded], names: Sequence[str] | None = None) -> GeneratedAnswers:
    """Answer the questions of ``conversations`` (``model.eval_turns``) with up to ``model.eval_generate``
    new tokens (``model.eval_num_beams`` beams), in chunks of ``len(conversations)`` prompts."""
    found = GeneratedAnswers()
    jobs: list[tuple[int, int, list[int]]] = []  # (sample, answer index, prompt ids)
    for b, conversation in enumerate(conversations):
        kinds = answer_types(conversation)
        answer_turns = [turn for turn, (role, _) in zip(conversation, turns(conversation)) if role == "assistant"]
        for k, prefix in answer_prompts(conversation, model.eval_turns):
            ids, _ = model.template.encode(prefix, model.tokenizer, generation=True)
            jobs.append((b, k, ids))
            references = answer_references(answer_turns[k])
            found.references.append(str(answer_turns[k].get("value", answer_turns[k].get("content", ""))).strip())
            found.reference_answers.append(references)
            found.reference_types.append(kinds[k])
            found.sources.append((b, k))
    size = max(len(conversations), 1)
    for start in range(0, len(jobs), size):
        chunk = jobs[start:start + size]
        rows, prompts = [b for b, _, _ in chunk], [ids for _, _, ids in chunk]
        labels = None if names is None else [f"{names[b]} answer {k}" for b, k, _ in chunk]
        tokens = model.generate_ids(prompts, _rows(features, rows, prompts, model.placeholder_ids),
                                    max_new_tokens=model.eval_generate, num_beams=model.eval_num_beams, names=labels)
        found.generated += [model.tokenizer.decode(row, skip_special_tokens=True).strip() for row in tokens]
    return found

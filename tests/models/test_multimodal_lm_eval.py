"""MultimodalLM evaluation generation: every question answered (prompt = the conversation up to it),
scored by exact match, VQA accuracy and caption scores, per question type."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polyfuse.fusion import MLPConnector
from polyfuse.metrics import captioning
from polyfuse.models import MultimodalLM
from polyfuse.models.multimodal_lm_eval import answer_prompts, answer_references

from .lm_cases import CONVERSATION, SHORT, save_tiny_lm, tiny_batch, tiny_encoders

pytestmark = pytest.mark.usefixtures("single_thread")

VQA_ANSWERS = ["two", "2", "2", "three", "two", "two", "2", "two", "three", "two"]  # normalised: eight "2", two "3"
WRITTEN_SPOKEN_BOTH = [
    {"from": "human", "value": "<image>\nwhat digit is shown ?"}, {"from": "gpt", "value": "seven", "type": "written"},
    {"from": "human", "value": "<audio>\nwhat digit is spoken ?"}, {"from": "gpt", "value": "seven", "type": "spoken"},
    {"from": "human", "value": "is the digit even ?"}, {"from": "gpt", "value": "no", "type": "both"}]
WITH_VQA_ANSWERS = [
    {"from": "human", "value": "<image>\nwhat digit is shown ?"}, {"from": "gpt", "value": "two", "type": "written"},
    {"from": "human", "value": "how many ?"}, {"from": "gpt", "value": "two", "type": "both", "answers": VQA_ANSWERS}]
CAPTION = [{"from": "human", "value": "<image>\ndescribe it ."},
           {"from": "gpt", "value": "a thin seven", "type": "caption", "answers": ["a thin seven", "a wide seven"]}]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm("llama", tmp_path_factory.mktemp("lms") / "llama")


def build(lm_dir: Path, **options) -> MultimodalLM:
    torch.manual_seed(0)
    return MultimodalLM(str(lm_dir), tiny_encoders(), MLPConnector, **options).eval()


def mock_generation(model: MultimodalLM, monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> list[dict]:
    """Replace the LM's generation by ``answers`` in order; returns the calls' prompts and presence."""
    queue, calls = list(answers), []

    def generate_ids(ids, features, max_new_tokens=16, num_beams=1, names=None, **options):
        calls.append({"ids": [list(row) for row in ids], "names": names,
                      "present": {m: value.present_or_full().tolist() for m, value in features.items()}})
        texts = [queue.pop(0) for _ in ids]
        return [model.tokenizer.encode(text, add_special_tokens=False) + [model.tokenizer.eos_token_id]
                for text in texts]

    monkeypatch.setattr(model, "generate_ids", generate_ids)
    return calls


def test_answer_prompts_and_references():
    prompts = answer_prompts(CONVERSATION)
    assert [(k, len(prefix)) for k, prefix in prompts] == [(0, 2), (1, 4)]
    assert prompts[0][1] == CONVERSATION[:2]
    assert answer_prompts(CONVERSATION, "last") == prompts[-1:]
    assert answer_references(WITH_VQA_ANSWERS[3]) == VQA_ANSWERS
    assert answer_references({"from": "gpt", "value": " seven "}) == ["seven"]
    with pytest.raises(ValueError, match="eval_turns"):
        answer_prompts(CONVERSATION, "first")


def test_every_question_is_answered_from_the_conversation_up_to_it(lm_dir, monkeypatch):
    model = build(lm_dir, eval_generate=3)
    batch = tiny_batch([True, True], [True, False], [CONVERSATION, SHORT])
    with torch.no_grad():
        outputs = model(batch).outputs
    assert outputs.generated_from == [(0, 0), (0, 1), (1, 0)]
    assert outputs.references == ["seven", "no", "nine"]
    # the first question, asked before <audio> comes, is the conversation cut there with no audio
    # spliced: what the same batch without audio and with the cut conversation generates
    cut = tiny_batch([True, True], [False, False], [CONVERSATION[:2], SHORT])
    last = tiny_batch([True, True], [True, False], [CONVERSATION, SHORT])
    assert outputs.generated[0] == model.generate(cut, max_new_tokens=3)[0]
    assert outputs.generated[1:] == model.generate(last, max_new_tokens=3)
    calls = mock_generation(model, monkeypatch, ["a", "b", "c"])
    with torch.no_grad():
        model(batch)
    assert [call["present"]["audio"] for call in calls] == [[False, True], [False]]   # chunks of 2 prompts
    assert [call["present"]["image"] for call in calls] == [[True, True], [True]]
    first, _ = model.template.encode(CONVERSATION[:2], model.tokenizer, generation=True)
    assert calls[0]["ids"][0] == first and calls[0]["names"] == ["0 answer 0", "0 answer 1"]
    with pytest.raises(ValueError, match="eval_turns"):
        build(lm_dir, eval_generate=3, eval_turns="every")


def test_metrics_over_all_turns_per_type_equal_a_hand_computation(lm_dir, monkeypatch):
    model = build(lm_dir, eval_generate=3, question_types=["written", "spoken", "both"])
    batch = tiny_batch([True, True], [True, False], [WRITTEN_SPOKEN_BOTH, WITH_VQA_ANSWERS])
    mock_generation(model, monkeypatch, ["seven", "eight", "no", "two", "three"])
    with torch.no_grad():
        outputs = model(batch).outputs
    assert outputs.reference_types == ["written", "spoken", "both", "written", "both"]
    metrics = model.head.make_metrics("test")
    model.head.update_metrics(metrics, outputs, batch)
    values = {name: float(value) for name, value in metrics.compute().items() if name.startswith("answer_")
              and not name.startswith("answer_token_acc")}
    # exact match: 1, 0, 1 | 1, 0 ("three" is not "two")
    # VQA accuracy: one reference -> equality; "three" among eight "2" and two "3": each of the two
    # "3" annotators left out leaves 1 match (1/3), each "2" one leaves 2 (2/3): (2/3 + 16/3) / 10 = 0.6
    expected = {"answer_exact_match": 3 / 5, "answer_exact_match_written": 1.0, "answer_exact_match_spoken": 0.0,
                "answer_exact_match_both": 1 / 2,
                "answer_vqa_acc": (1 + 0 + 1 + 1 + 0.6) / 5, "answer_vqa_acc_written": 1.0,
                "answer_vqa_acc_spoken": 0.0, "answer_vqa_acc_both": (1 + 0.6) / 2}
    assert values == pytest.approx(expected)


def test_caption_like_answers_get_caption_scores(lm_dir, monkeypatch):
    seen = {}

    def scores(predictions, references, **options):
        seen.update(predictions=predictions, references=references)
        return {"CIDEr": 12.5, "BLEU-4": 3.0}

    monkeypatch.setattr(captioning, "caption_scores", scores)
    model = build(lm_dir, eval_generate=3, question_types=["written"], caption_types=["caption"])
    batch = tiny_batch([True, True], [False, False], [CAPTION, CONVERSATION[:2]])
    mock_generation(model, monkeypatch, ["a wide seven", "seven"])
    with torch.no_grad():
        outputs = model(batch).outputs
    metrics = model.head.make_metrics("val").clone(prefix="val/")
    model.head.update_metrics(metrics, outputs, batch)
    values = metrics.compute()
    assert seen == {"predictions": {"0/0": "a wide seven"}, "references": {"0/0": ["a thin seven", "a wide seven"]}}
    assert values["val/answer_CIDEr_caption"] == 12.5 and values["val/answer_BLEU-4_caption"] == 3.0
    # two references, one matching: soft accuracy (1/3 + 0) / 2 for the caption, 1 for "seven"
    assert float(values["val/answer_vqa_acc"]) == pytest.approx((1 / 6 + 1.0) / 2)
    assert "answer_captions_caption" not in model.head.make_metrics("train").keys(keep_base=True)

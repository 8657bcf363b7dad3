"""MultimodalLM: splicing at placeholders, answer-only labels, missing modalities, stages, generation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polyfuse.batch import Encoded
from polyfuse.fusion import MLPConnector, PerceiverResamplerConnector, QFormerConnector
from polyfuse.models import MultimodalLM
from polyfuse.models.chat import IGNORE_INDEX

from .lm_cases import CONVERSATION, SHORT, save_tiny_lm, tiny_batch, tiny_encoders

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lms")
    return {kind: save_tiny_lm(kind, root / kind) for kind in ("llama", "qwen2", "gpt2")}


def build(lm_dir: Path, connector=MLPConnector, **options) -> MultimodalLM:
    torch.manual_seed(0)
    return MultimodalLM(str(lm_dir), tiny_encoders(), connector, **options).eval()


def test_multi_turn_splice_positions_and_answer_only_labels(lm_dirs):
    model = build(lm_dirs["llama"])
    tokenizer = model.tokenizer
    batch = tiny_batch([True, True], [True, False], [CONVERSATION, SHORT])
    ids, labels = model.tokenize(batch.extras["conversations"])
    # labels: exactly the answers and their EOS, in order
    learned = [tokenizer.convert_ids_to_tokens([t for t in row if t != IGNORE_INDEX]) for row in labels]
    assert learned == [["seven", "</s>", "no", "</s>"], ["nine", "</s>"]]
    features = model.encode(batch)
    n_image, n_audio = features["image"].tokens.shape[1], int(features["audio"].mask[0].sum())
    spliced = model.splice(ids, features, labels)
    image_at = ids[0].index(model.placeholder_ids["image"])
    audio_at = ids[0].index(model.placeholder_ids["audio"])
    embeds = spliced.inputs_embeds[0]
    # image tokens replace <image>; the text after it shifts by n_image - 1; audio likewise
    torch.testing.assert_close(embeds[image_at:image_at + n_image], features["image"].tokens[0])
    audio_start = audio_at + n_image - 1
    torch.testing.assert_close(embeds[audio_start:audio_start + n_audio], features["audio"].tokens[0, :n_audio])
    assert len(ids[0]) - 2 + n_image + n_audio == int(spliced.attention_mask[0].sum())
    # spliced tokens and prompts are -100; answers keep their ids at the shifted positions
    assert torch.all(spliced.labels[0, image_at:image_at + n_image] == IGNORE_INDEX)
    shifted = labels[0][:image_at] + [IGNORE_INDEX] * n_image + labels[0][image_at + 1:audio_at] \
        + [IGNORE_INDEX] * n_audio + labels[0][audio_at + 1:]
    assert spliced.labels[0].tolist() == shifted
    # right padding of the shorter sample: mask 0 and label -100 there, positions count real tokens
    real = int(spliced.attention_mask[1].sum())
    assert spliced.attention_mask[1, :real].all() and not spliced.attention_mask[1, real:].any()
    assert torch.all(spliced.labels[1, real:] == IGNORE_INDEX)
    assert spliced.position_ids[1, :real].tolist() == list(range(real))


def test_missing_modality_adds_no_tokens_and_changes_nothing_else(lm_dirs):
    model = build(lm_dirs["llama"])
    both = tiny_batch([True, False], [True, True], [CONVERSATION, CONVERSATION])
    ids, _ = model.tokenize(both.extras["conversations"])
    features = model.encode(both)
    spliced = model.splice(ids, features)
    lengths = spliced.attention_mask.sum(1).tolist()
    assert lengths[0] - lengths[1] == features["image"].tokens.shape[1]  # no zeros, no placeholder
    # the sample without its image gives the logits of the same text with <image> removed from the prompt
    with torch.no_grad():
        full = model(both).outputs.logits[1, : lengths[1]]
        audio = features["audio"]
        alone = model.splice([[t for t in ids[1] if t != model.placeholder_ids["image"]]],
                             {"audio": Encoded(audio.tokens[1:], audio.mask[1:], audio.present[1:])})
        reference = model.language_model(alone).logits[0]
    torch.testing.assert_close(full, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("connector", [MLPConnector, PerceiverResamplerConnector, QFormerConnector])
def test_stage1_trains_only_the_connector(lm_dirs, kind, connector):
    options = {"latents": 4, "heads": 2, "depth": 1} if connector is PerceiverResamplerConnector else \
        {"queries": 4, "heads": 2, "depth": 1} if connector is QFormerConnector else {}
    factory = lambda dims, out_dim: connector(dims, out_dim, **options)  # noqa: E731
    model = build(lm_dirs[kind], factory).train()
    batch = tiny_batch([True, False], [False, True], [CONVERSATION, CONVERSATION])
    loss = model(batch).outputs.loss
    assert torch.isfinite(loss)
    loss.backward()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"connector.{name}" for name, _ in model.connector.named_parameters()}
    for name, p in model.connector.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"connector parameter {name} got no gradient"
    assert all(p.grad is None for p in model.lm.parameters()) and all(p.grad is None for p in model.encoders.parameters())
    assert not model.lm.training and not model.encoders.training  # frozen parts stay in eval mode
    fresh = MultimodalLM(str(lm_dirs[kind]), tiny_encoders(), factory)
    assert fresh.training and not fresh.lm.training and not any(m.training for m in fresh.encoders.modules())


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
def test_batched_left_padded_generation_equals_one_by_one(lm_dirs, kind):
    model = build(lm_dirs[kind])
    conversations = [CONVERSATION, SHORT, SHORT[:1]]
    batch = tiny_batch([True, False, True], [True, False, False], conversations, audio_lengths=[4000, 2400, 3200])
    together = model.generate(batch, max_new_tokens=5)
    ids, _ = model.tokenize(conversations, generation=True)
    features = model.encode(batch)
    batched_ids = model.generate_ids(ids, features, max_new_tokens=5, min_new_tokens=5)
    for index in range(len(conversations)):
        single = tiny_batch([True, False, True][index:index + 1], [True, False, False][index:index + 1],
                            conversations[index:index + 1], audio_lengths=[[4000, 2400, 3200][index]])
        single.inputs = {m: type(v)(batch.inputs[m].values[index:index + 1],
                                    None if v.mask is None else batch.inputs[m].mask[index:index + 1],
                                    batch.inputs[m].present[index:index + 1]) for m, v in batch.inputs.items()}
        alone_ids = model.generate_ids(ids[index:index + 1], model.encode(single), max_new_tokens=5, min_new_tokens=5)
        assert alone_ids[0] == batched_ids[index]
        assert model.generate(single, max_new_tokens=5) == [together[index]]
    # the prompt ends with the assistant prefix and no answer
    assert model.tokenizer.convert_ids_to_tokens(ids[1])[-1] != "nine"


def test_errors_name_what_is_wrong(lm_dirs):
    with pytest.raises(ValueError, match="stage must be 1"):
        build(lm_dirs["llama"], stage=3)
    model = build(lm_dirs["llama"])
    batch = tiny_batch([True], [True], [[{"from": "human", "value": "<image> <image>"}, {"from": "gpt", "value": "no"}]])
    with pytest.raises(ValueError, match=r"sample 0 \(id '0'\) has 2 <image> placeholders but one image"):
        model(batch)
    batch = tiny_batch([True], [True], [SHORT])
    with pytest.raises(ValueError, match=r"sample 0 \(id '0'\) has \['audio'\] but its text has no .*<audio>.* placeholder"):
        model(batch)
    batch.extras = {}
    with pytest.raises(KeyError, match="conversations"):
        model(batch)


def test_answer_token_accuracy_counts_answer_words_not_eos(lm_dirs):
    model = build(lm_dirs["llama"])
    batch = tiny_batch([True], [True], [CONVERSATION])
    with torch.no_grad():
        outputs = model(batch).outputs
    labels = outputs.labels
    perfect = torch.full_like(outputs.logits, -10.0)
    targets = labels[0, 1:]
    perfect[0, :-1][targets != IGNORE_INDEX, targets[targets != IGNORE_INDEX]] = 10.0
    eos = model.tokenizer.eos_token_id
    perfect[0, :-1][targets == eos] = -10.0  # every EOS wrong: the accuracy ignores them
    metrics = model.head.make_metrics("val")
    model.head.update_metrics(metrics, type(outputs)(perfect, None, labels), batch)
    assert metrics.compute()["answer_token_acc"] == 1.0


def test_eval_generate_answers_the_last_question_and_scores_exact_match(lm_dirs):
    model = build(lm_dirs["llama"], eval_generate=3, eval_turns="last")  # every question: test_multimodal_lm_eval.py
    batch = tiny_batch([True, True], [True, False], [CONVERSATION, SHORT])
    with torch.no_grad():
        outputs = model(batch).outputs
    assert outputs.references == ["no", "nine"]
    assert outputs.generated == model.generate(batch, max_new_tokens=3)
    metrics = model.head.make_metrics("test")
    model.head.update_metrics(metrics, type(outputs)(outputs.logits, None, None, [" No ", "eight"], ["no", "nine"]),
                              batch)
    assert metrics["answer_exact_match"].compute() == 0.5
    assert "answer_exact_match" not in model.head.make_metrics("train").keys(keep_base=True)
    assert "answer_exact_match" not in build(lm_dirs["llama"]).head.make_metrics("test").keys(keep_base=True)
    model.train()
    assert model(batch).outputs.generated is None  # never while training


def test_eval_num_beams_makes_evaluation_generate_with_beam_search(lm_dirs, monkeypatch):
    model = build(lm_dirs["llama"], eval_generate=3, eval_num_beams=3, eval_turns="last")
    batch = tiny_batch([True, True], [True, False], [CONVERSATION, SHORT])
    beams = []
    generate = model.lm.generate
    monkeypatch.setattr(model.lm, "generate", lambda **kw: beams.append(kw["num_beams"]) or generate(**kw))
    with torch.no_grad():
        generated = model(batch).outputs.generated
    assert beams == [3]
    assert generated == model.generate(batch, max_new_tokens=3, num_beams=3)
    assert beams == [3, 3]
    greedy = build(lm_dirs["llama"], eval_generate=3, eval_turns="last")
    plain = greedy.lm.generate
    monkeypatch.setattr(greedy.lm, "generate", lambda **kw: beams.append(kw["num_beams"]) or plain(**kw))
    with torch.no_grad():
        greedy(batch)
    assert beams[-1] == 1  # the default stays greedy
    with pytest.raises(ValueError, match="eval_num_beams"):
        build(lm_dirs["llama"], eval_generate=3, eval_num_beams=0)


def test_metrics_per_question_type(lm_dirs):
    model = build(lm_dirs["llama"], eval_generate=2, question_types=["written", "spoken", "both"], eval_turns="last")
    typed = [dict(turn, type=kind) if turn["from"] == "gpt" else turn
             for turn, kind in zip(CONVERSATION, [None, "written", None, "both"])]
    batch = tiny_batch([True], [True], [typed])
    with torch.no_grad():
        outputs = model(batch).outputs
    assert outputs.answer_types == [["written", "both"]] and outputs.reference_types == ["both"]
    targets = outputs.labels[0, 1:]
    logits = torch.full_like(outputs.logits, -10.0)
    answer_positions = (targets != IGNORE_INDEX).nonzero().flatten().tolist()
    first = answer_positions[0]  # "seven" (written) right; "no" (both) wrong
    for position in answer_positions:
        wrong = int(targets[position]) + 1 if position != first else int(targets[position])
        logits[0, position, wrong] = 10.0
    metrics = model.head.make_metrics("test")
    assert {"answer_token_acc_written", "answer_exact_match_both"} <= set(metrics.keys(keep_base=True))
    model.head.update_metrics(metrics, type(outputs)(logits, None, outputs.labels, ["No"], ["no"],
                                                     outputs.answer_types, outputs.reference_types), batch)
    values = {name: metrics[name].compute() for name in ("answer_token_acc", "answer_token_acc_written",
                                                           "answer_token_acc_both", "answer_exact_match_both")}
    assert values == {"answer_token_acc": 0.5, "answer_token_acc_written": 1.0, "answer_token_acc_both": 0.0,
                      "answer_exact_match_both": 1.0}
    assert metrics["answer_token_acc_spoken"].update_count == 0  # no spoken answer in the batch
    assert set(model.head.make_metrics("train").keys(keep_base=True)) == {"answer_token_acc", "truncated_samples"}

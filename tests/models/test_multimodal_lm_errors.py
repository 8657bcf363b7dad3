"""MultimodalLM on bad input: over-long conversations (cut with a warning naming the sample, or an error
for a prompt) and the LM's context as the length limit."""

from __future__ import annotations

import pytest
import torch

from polyfuse.fusion import MLPConnector
from polyfuse.models import MultimodalLM
from polyfuse.models.chat import IGNORE_INDEX

from .lm_cases import CONVERSATION, SHORT, save_tiny_lm, tiny_batch, tiny_encoders

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory):
    return save_tiny_lm("llama", tmp_path_factory.mktemp("lm") / "llama")


def build(lm_dir, **options) -> MultimodalLM:
    torch.manual_seed(0)
    return MultimodalLM(str(lm_dir), tiny_encoders(), MLPConnector, **options).eval()


def test_max_length_is_at_most_the_lm_context(lm_dir):
    assert build(lm_dir, max_length=100_000).max_length == 256  # the tiny LM's max_position_embeddings
    assert build(lm_dir, max_length=40).max_length == 40


def test_overlong_training_sample_is_cut_with_a_warning_naming_it_and_labels_stay_aligned(lm_dir):
    full = build(lm_dir)
    batch = tiny_batch([True, True], [True, False], [CONVERSATION, SHORT])
    batch.ids = ["long-one", "short-one"]
    features, _, reference = full.prepare(batch)
    lengths = reference.attention_mask.sum(1).tolist()
    limit = (lengths[0] + lengths[1]) // 2  # cuts the first sample inside its answers, not the second
    assert lengths[1] < limit < lengths[0]
    model = build(lm_dir, max_length=limit)
    model.connector.load_state_dict(full.connector.state_dict())
    with pytest.warns(UserWarning, match=r"sample 0 \(id 'long-one'\) is \d+ tokens long after splicing; cut to "
                                         rf"max_length={limit} \([1-9]\d* answer tokens dropped\)"):
        _, _, cut = model.prepare(batch)
    assert model.truncated == 1 and cut.truncated == 1
    metrics = model.head.make_metrics("train")  # reported: counted in the training metrics
    with pytest.warns(UserWarning, match="long-one"):
        model.head.update_metrics(metrics, model(batch).outputs, batch)
    assert float(metrics["truncated_samples"].compute()) == 1.0 and model.truncated == 2
    assert cut.inputs_embeds.shape[1] == limit
    torch.testing.assert_close(cut.inputs_embeds[0], reference.inputs_embeds[0, :limit])
    assert cut.labels[0].tolist() == reference.labels[0, :limit].tolist()  # the same cut on tokens and labels
    assert cut.labels[1, :lengths[1]].tolist() == reference.labels[1, :lengths[1]].tolist()
    assert bool((reference.labels[0, limit:] != IGNORE_INDEX).any())  # answers really were dropped


def test_overlong_generation_prompt_is_an_error_naming_the_sample(lm_dir):
    model = build(lm_dir, max_length=40)
    batch = tiny_batch([True], [True], [CONVERSATION])
    batch.ids = ["too-long"]
    with pytest.raises(ValueError, match=r"sample 0 \(id 'too-long'\) is \d+ tokens long after splicing, more than "
                                         r"the 36 the language model can take"):
        model.generate(batch, max_new_tokens=4)


JINJA = ("{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }} {% else %}ASSISTANT:"
         "{% generation %} {{ m['content'] }}</s>{% endgeneration %}{% endif %}{% endfor %}"
         "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def test_tokenizer_chat_template_labels_answers_and_its_absence_is_named(lm_dir):
    from polyfuse.models.chat import ChatTemplate, load_chat_tokenizer

    with pytest.raises(ValueError, match=r"tokenizer '.*llama' has no chat template"):
        build(lm_dir, template="tokenizer")
    tokenizer = load_chat_tokenizer(str(lm_dir))
    tokenizer.chat_template = JINJA
    model = build(lm_dir, tokenizer=tokenizer, template="tokenizer")
    ids, labels = model.tokenize([CONVERSATION])
    # the same layout as polyfuse's template without system prompt and BOS: the same ids and labels
    expected_ids, expected_labels = ChatTemplate(system="", add_bos=False).encode(CONVERSATION, model.tokenizer)
    assert (ids[0], labels[0]) == (expected_ids, expected_labels)
    assert model.tokenizer.convert_ids_to_tokens([t for t in labels[0] if t != IGNORE_INDEX]) == ["seven", "</s>", "no",
                                                                                                "</s>"]
    prompt, _ = model.tokenize([CONVERSATION], generation=True)
    assert prompt[0] == expected_ids[: expected_ids.index(model.tokenizer.convert_tokens_to_ids("no"))]
    tokenizer.chat_template = JINJA.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    with pytest.raises(ValueError, match="marks no answer tokens: put {% generation %}"):
        model.tokenize([CONVERSATION])


def test_lm_directory_that_is_not_a_causal_lm_is_named(tmp_path):
    from transformers import ViTConfig, ViTModel

    from polyfuse.models.causal_lm import load_causal_lm

    ViTModel(ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                       image_size=8, patch_size=4)).save_pretrained(str(tmp_path / "vit"))
    with pytest.raises(ValueError, match=r"vit holds a 'vit' model, which is not a causal language model"):
        load_causal_lm(tmp_path / "vit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty has no config.json"):
        load_causal_lm(tmp_path / "empty")

"""MultimodalLM.attention_maps: the LM's attention over each modality's spliced tokens, returned by name."""

from __future__ import annotations

import pytest
import torch

from polyfuse.fusion import MLPConnector
from polyfuse.models import MultimodalLM
from polyfuse.models.lm_attention import eager_attention
from polyfuse.reporting.attention import collect_attention, parse_map_name

from .lm_cases import CONVERSATION, SHORT, save_tiny_lm, tiny_batch, tiny_encoders

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_maps_are_the_lm_attention_over_each_modality_span(tmp_path, kind):
    torch.manual_seed(0)
    model = MultimodalLM(str(save_tiny_lm(kind, tmp_path / kind)), tiny_encoders(), MLPConnector).eval()
    batch = tiny_batch([True, False], [True, False], [CONVERSATION, SHORT])
    implementation = model.lm.config._attn_implementation
    maps = model.attention_maps(batch)
    assert model.lm.config._attn_implementation == implementation  # switched back after the pass
    assert sorted(maps) == [f"text->{m}/layer{i}" for m in ("audio", "image") for i in (0, 1)]
    assert all(parse_map_name(name) is not None for name in maps)
    features, _, spliced = model.prepare(batch)
    n_image, n_audio = features["image"].tokens.shape[1], int(features["audio"].mask[0].sum())
    length = spliced.attention_mask.shape[1]
    assert maps["text->image/layer1"].shape == (2, 4, length, n_image)
    assert maps["text->audio/layer0"].shape == (2, 4, length, n_audio)
    # the reference: the whole (L, L) eager attention, sliced where the ids say the image went
    with torch.no_grad(), eager_attention(model.lm):
        layers = model.lm(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                          position_ids=spliced.position_ids, output_attentions=True).attentions
    ids, _ = model.tokenize(batch.extras["conversations"])
    image_at = ids[0].index(model.placeholder_ids["image"])
    audio_at = ids[0].index(model.placeholder_ids["audio"]) + n_image - 1
    text = torch.ones(length, dtype=torch.bool)
    text[image_at:image_at + n_image] = False
    text[audio_at:audio_at + n_audio] = False
    for layer in (0, 1):
        image = maps[f"text->image/layer{layer}"]
        torch.testing.assert_close(image[0][:, text], layers[layer][0, :, text, image_at:image_at + n_image])
        audio = maps[f"text->audio/layer{layer}"]
        torch.testing.assert_close(audio[0][:, text], layers[layer][0, :, text, audio_at:audio_at + n_audio])
        assert not image[0][:, ~text].any() and not image[1].any() and not audio[1].any()  # modality rows, absent sample
        assert float(image[0, :, image_at + n_image:].sum()) > 0  # later text does look at the image
    # the explain path collects them with the logits of the same pass
    collected = collect_attention(model, batch)
    assert sorted(collected.fusion) == sorted(maps)
    torch.testing.assert_close(collected.fusion["text->image/layer0"], maps["text->image/layer0"])
    with torch.no_grad():
        torch.testing.assert_close(collected.logits.logits, model(batch).outputs.logits, atol=1e-5, rtol=1e-5)

"""``InferenceModel.predict``: input forms, absent modalities, one sample against a batch."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import polyfuse
from polyfuse.data.io import load_audio

from .tiny_runs import raw_test_inputs


@pytest.fixture(scope="module")
def model(runs):
    return polyfuse.load(runs("classification"))


@pytest.fixture(scope="module")
def inputs(runs):
    return raw_test_inputs(runs("classification"))


def test_a_left_out_modality_is_passed_as_absent(model, inputs):
    without_audio = model.predict(image=inputs["image"], text=inputs["text"])
    batch, _ = model.preprocess(**inputs)  # audio given, then marked absent: its values must not matter
    batch.inputs["audio"] = replace(batch.inputs["audio"], present=torch.zeros(4, dtype=torch.bool))
    with torch.no_grad():
        expected = model(batch).outputs
    torch.testing.assert_close(without_audio["logits"], expected, atol=1e-6, rtol=0)
    with_audio = model.predict(**inputs)
    assert not torch.allclose(with_audio["logits"], without_audio["logits"])  # audio does change the output


def test_none_in_a_list_is_one_absent_sample(model, inputs):
    mixed = model.predict(image=inputs["image"][:2], text=inputs["text"][:2], audio=[inputs["audio"][0], None])
    second = model.predict(image=inputs["image"][1], text=inputs["text"][1])
    torch.testing.assert_close(mixed["logits"][1], second["logits"], atol=1e-5, rtol=0)
    first = model.predict(image=inputs["image"][0], text=inputs["text"][0], audio=inputs["audio"][0])
    torch.testing.assert_close(mixed["logits"][0], first["logits"], atol=1e-5, rtol=0)


def test_one_sample_agrees_with_its_row_of_a_batch(model, inputs):
    # clips of one length: the audio CNN's last frames see the batch's zero padding (STFT centring,
    # frame-mask rounding), so a clip padded in a batch is not bit-equal to the clip alone
    shortest = min(len(load_audio(path)) for path in inputs["audio"])
    clips = [load_audio(path)[:shortest] for path in inputs["audio"]]
    batch = model.predict(image=inputs["image"], audio=clips, text=inputs["text"])  # texts of different lengths
    for i in range(4):
        one = model.predict(image=inputs["image"][i], audio=clips[i], text=inputs["text"][i])
        torch.testing.assert_close(one["logits"], batch["logits"][i], atol=1e-5, rtol=0)
        assert one["label"] == batch["label"][i].item() and one["label_name"] == batch["label_name"][i]
        assert isinstance(one["label"], int) and one["probs"].shape == (10,)


def test_image_and_audio_input_forms_agree(model, inputs):
    path, clip = inputs["image"][0], inputs["audio"][0]
    reference = model.predict(image=path, audio=clip)["logits"]
    pil = Image.open(path)
    pixels = np.asarray(pil.convert("L"))
    wave = load_audio(clip)  # 8 kHz, the model's rate
    for image in (pil, pixels, torch.from_numpy(pixels), torch.from_numpy(pixels)[None],
                  model.preprocessing.image(path)):  # a float tensor is taken as preprocessed
        for audio in (wave, wave.numpy()):
            torch.testing.assert_close(model.predict(image=image, audio=audio)["logits"], reference, atol=1e-6, rtol=0)
    bigger = pil.resize((64, 64))  # other sizes are resized to the model's 32 x 32
    assert model.predict(image=bigger)["probs"].shape == (10,)
    upsampled = torch.from_numpy(np.repeat(wave.numpy(), 2))  # 16 kHz input is resampled to 8 kHz
    assert model.predict(audio=upsampled, sample_rate=16000)["probs"].shape == (10,)


def test_batched_tensors_and_errors(model, inputs):
    images = torch.stack([model.preprocessing.image(p) for p in inputs["image"]])  # (B, C, H, W) is a batch
    torch.testing.assert_close(model.predict(image=images)["logits"],
                               model.predict(image=inputs["image"])["logits"], atol=1e-6, rtol=0)
    with pytest.raises(KeyError, match="no modality"):
        model.predict(video=["a.mp4"])
    with pytest.raises(ValueError, match="at least one input"):
        model.predict()
    with pytest.raises(ValueError, match="mix of single samples and batches"):
        model.predict(image=inputs["image"], text=inputs["text"][0])
    with pytest.raises(ValueError, match="different batch sizes"):
        model.predict(image=inputs["image"], text=inputs["text"][:2])
    with pytest.raises(ValueError, match="preprocessed and must have shape"):
        model.predict(image=torch.zeros(3, 32, 32))
    with pytest.raises(TypeError, match="text input must be a string"):
        model.predict(text=3)


@pytest.mark.gpu
def test_predict_on_cuda_matches_cpu(runs, model, inputs):
    on_gpu = polyfuse.load(runs("classification"), device="cuda")
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.predict(**inputs)["logits"].cpu(), model.predict(**inputs)["logits"],
                               atol=1e-4, rtol=1e-4)

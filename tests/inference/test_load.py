"""``polyfuse.load`` on a run directory: the loaded model predicts what the trained model computes on
its own test batch, for every task type the configs train."""

from __future__ import annotations

import pytest
import torch

import polyfuse
from polyfuse.reporting.runs import load_model

from .tiny_runs import TASKS, loader_batch, raw_test_inputs


@pytest.mark.parametrize("task", [task for task in TASKS if task != "multitask"])
def test_predict_on_raw_inputs_equals_the_model_on_the_test_batch(runs, task):
    run = runs(task)
    model = polyfuse.load(run)
    assert not model.training and model.task == task
    reference, _ = load_model(run)  # the CLI tools' loader, independent of polyfuse.inference
    batch = loader_batch(run)
    with torch.no_grad():
        expected = reference.model(batch).outputs
    predicted = model.predict(**raw_test_inputs(run))  # file paths and strings, preprocessed by the model
    if task in ("classification", "vqa"):
        torch.testing.assert_close(predicted["logits"], expected, atol=1e-6, rtol=0)
    if task == "classification":
        assert predicted["label"].tolist() == expected.argmax(-1).tolist()
        assert predicted["label_name"][0] in ("zero", "one", "two", "three", "four", "five", "six", "seven",
                                              "eight", "nine")
        torch.testing.assert_close(predicted["probs"].sum(-1), torch.ones(4))
    if task == "vqa":
        assert predicted["answer"] == reference.model.head.predict(expected)
    if task == "retrieval":
        for modality in ("image", "text"):
            torch.testing.assert_close(predicted["embeddings"][modality], expected["embeddings"][modality],
                                       atol=1e-6, rtol=0)
    if task == "captioning":  # eval-mode forward generates with the head's beam search
        assert predicted["caption"] == expected["generated"]
        assert all(isinstance(c, str) for c in predicted["caption"])


def test_multitask_predicts_every_task_as_its_head_does(runs):
    run = runs("multitask")
    model = polyfuse.load(run)
    reference, _ = load_model(run)
    batch = loader_batch(run)
    with torch.no_grad():
        expected = reference.model(batch).outputs
    predicted = model.predict(**raw_test_inputs(run))
    assert set(predicted) == {"task", "retrieval", "vqa", "captioning"}
    torch.testing.assert_close(predicted["vqa"]["logits"], expected["vqa"], atol=1e-6, rtol=0)
    assert predicted["captioning"]["caption"] == expected["captioning"]["generated"]
    # the retrieval head was trained on captions (a target); at prediction the text input is embedded
    embeddings = expected["retrieval"]["embeddings"]
    torch.testing.assert_close(predicted["retrieval"]["embeddings"]["image"], embeddings["image"], atol=1e-6, rtol=0)
    captions = model.predict(text=list(batch.extras["caption"]))["retrieval"]["embeddings"]["text"]
    torch.testing.assert_close(captions, embeddings["text"], atol=1e-6, rtol=0)


def test_the_model_carries_its_tokenizer_and_preprocessing(runs):
    model = polyfuse.load(runs("classification"))
    assert model.modalities == ["image", "audio", "text"]
    assert model.tokenizer.token_to_id("[PAD]") == model.preprocessing.text.pad_id
    assert model.preprocessing.audio.sample_rate == 8000
    assert model.preprocessing.image.shape == (1, 32, 32)
    captioner = polyfuse.load(runs("captioning"))  # no text input: the decoder's tokenizer
    assert captioner.preprocessing.text is None and captioner.tokenizer is not None


def test_last_checkpoint_and_errors(runs, tmp_path):
    run = runs("classification")
    assert polyfuse.load(run, checkpoint="last").task == "classification"
    with pytest.raises(FileNotFoundError, match="no such run"):
        polyfuse.load(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        polyfuse.load(tmp_path)


def test_import_polyfuse_stays_light():
    import subprocess
    import sys

    code = ("import sys, polyfuse; assert 'torch' not in sys.modules, 'import polyfuse imported torch'; "
            "assert 'polyfuse.inference' not in sys.modules; print(polyfuse.load.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "polyfuse.inference.load"

"""The preprocessing of a ``MultimodalDataModule`` run (image / audio / text pipelines) and its JSON form."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from omegaconf import OmegaConf

from polyfuse.data.audio import AudioPipeline
from polyfuse.data.image import ImagePipeline
from polyfuse.data.text import TextPipeline
from polyfuse.inference.load import run_labels
from polyfuse.inference.preprocess import Preprocessing


def folder_data_config(root: Path):
    """An ``av_folder``-style data section (the pipelines' settings as a run's config.yaml holds them)."""
    return OmegaConf.create({
        "_target_": "polyfuse.training.MultimodalDataModule",
        "splits": {"train": {"_target_": "polyfuse.data.MediaFolderReader", "labels": ["cat", "dog"]}},
        "image": {"_target_": "polyfuse.data.ImagePipeline", "size": 24, "mode": "RGB", "mean": None, "std": None,
                  "train_crop_scale": [0.8, 1.0],
                  "augment": [{"_target_": "torchvision.transforms.v2.RandomHorizontalFlip"}]},
        "audio": {"_target_": "polyfuse.data.AudioPipeline", "sample_rate": 16000, "max_seconds": 0.25,
                  "eval_crop": "center"},
        "text": {"_target_": "polyfuse.data.TextPipeline", "tokenizer": str(root / "tokenizer.json"), "max_length": 6},
    })


def test_pipeline_preprocessing_equals_the_data_pipelines_in_evaluation(avdigits_root: Path, tmp_path: Path):
    data = folder_data_config(avdigits_root)
    preprocessing = Preprocessing.from_data_config(data, ["image", "audio", "text"])
    image, clip = avdigits_root / "images" / "0001.png", avdigits_root / "audio" / "0001.flac"
    text = "it is greater than two and it equals two plus two"
    expected_image = ImagePipeline(24, "RGB", train_crop_scale=None)(image)  # evaluation: no crop, no flip
    expected_audio = AudioPipeline(16000, 0.25, eval_crop="center")(clip)    # 8 kHz file resampled to 16 kHz
    expected_text = TextPipeline(avdigits_root / "tokenizer.json", max_length=6)(text)
    torch.testing.assert_close(preprocessing.image(image), expected_image, atol=0, rtol=0)
    torch.testing.assert_close(preprocessing.audio(clip), expected_audio, atol=0, rtol=0)
    assert preprocessing.text(text).tolist() == expected_text.tolist() and len(expected_text) == 6
    assert run_labels(data) == ["cat", "dog"]

    shutil.copy(avdigits_root / "tokenizer.json", tmp_path / "tokenizer.json")
    settings = json.loads(json.dumps(preprocessing.to_dict()))  # plain JSON, as an export stores it
    settings["text"]["tokenizer"] = "tokenizer.json"            # relative to the folder
    restored = Preprocessing.from_dict(settings, base=tmp_path)
    assert restored.text.settings["tokenizer"] == str(tmp_path / "tokenizer.json")
    torch.testing.assert_close(restored.image(image), expected_image, atol=0, rtol=0)
    torch.testing.assert_close(restored.audio(clip), expected_audio, atol=0, rtol=0)
    assert restored.text(text).tolist() == expected_text.tolist()


def test_a_batch_without_any_text_or_audio_still_has_encoder_ready_placeholders(avdigits_root: Path):
    preprocessing = Preprocessing.from_data_config(folder_data_config(avdigits_root), ["image", "audio", "text"])
    image = preprocessing.image(avdigits_root / "images" / "0001.png")
    batch = preprocessing.collate(["image", "audio", "text"], [{"image": image, "audio": None, "text": None}])
    assert batch.inputs["text"].values.dtype == torch.long and not batch.inputs["text"].present.any()
    assert batch.inputs["audio"].values.shape == (1, 4000)  # max_seconds at 16 kHz, silent and absent
    assert not batch.inputs["audio"].present.any() and not batch.inputs["audio"].mask.any()

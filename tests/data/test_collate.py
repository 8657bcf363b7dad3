import pytest
import torch

from polyfuse.data.collate import MultimodalCollate


def _sample(i, text_len, audio_len, image=True):
    return {
        "id": f"s{i}",
        "label": i,
        "image": torch.full((1, 4, 4), float(i)) if image else None,
        "text": torch.arange(1, text_len + 1) if text_len is not None else None,
        "audio": torch.randn(audio_len) if audio_len is not None else None,
        "caption": f"caption {i}",
    }


def test_variable_lengths_are_padded_with_masks():
    collate = MultimodalCollate(["image", "text", "audio"], pad_values={"text": 0})
    batch = collate([_sample(0, 3, 10), _sample(1, 5, 7)])
    text = batch.inputs["text"]
    assert text.values.shape == (2, 5)
    assert text.mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert text.values[0, 3:].tolist() == [0, 0]
    audio = batch.inputs["audio"]
    assert audio.values.shape == (2, 10) and audio.mask.sum(1).tolist() == [10, 7]
    assert batch.targets["label"].tolist() == [0, 1]
    assert batch.ids == ["s0", "s1"] and batch.extras["caption"] == ["caption 0", "caption 1"]
    assert batch.inputs["image"].mask is None and batch.inputs["image"].values.shape == (2, 1, 4, 4)


def test_sample_without_audio_is_absent():
    collate = MultimodalCollate(["image", "text", "audio"])
    batch = collate([_sample(0, 3, 10), _sample(1, 2, None), _sample(2, 4, 6)])
    audio = batch.inputs["audio"]
    assert audio.present.tolist() == [True, False, True]
    assert not audio.mask[1].any() and torch.equal(audio.values[1], torch.zeros(10))
    assert batch.inputs["text"].present.all()


def test_absent_image_gets_zeros_and_whole_batch_absent_uses_fallback_shape():
    collate = MultimodalCollate(["image"], shapes={"image": (1, 4, 4)})
    batch = collate([_sample(0, 1, 1, image=False), _sample(1, 1, 1)])
    assert batch.inputs["image"].present.tolist() == [False, True]
    assert torch.equal(batch.inputs["image"].values[0], torch.zeros(1, 4, 4))
    batch = collate([_sample(0, 1, 1, image=False)])
    assert batch.inputs["image"].values.shape == (1, 1, 4, 4)
    assert not batch.inputs["image"].present.any()


def test_mismatched_image_shapes_name_the_modality():
    collate = MultimodalCollate(["image"])
    bad = _sample(1, 1, 1)
    bad["image"] = torch.zeros(1, 5, 5)
    with pytest.raises(ValueError, match="'image'"):
        collate([_sample(0, 1, 1), bad])


def test_missing_target_names_the_sample():
    collate = MultimodalCollate(["text"])
    sample = _sample(0, 2, None)
    del sample["label"]
    with pytest.raises(KeyError, match="s0"):
        collate([sample])


def test_bad_samples_become_placeholder_rows_with_the_shapes_of_a_good_batch():
    from polyfuse.data.errors import BadSample

    collate = MultimodalCollate(["image", "text", "audio"], targets=("label", "scores"))
    bad = BadSample("s9", "/data/9.jpg", "cannot decode image file")
    samples = [dict(_sample(i, 3 + i, 10 - i), scores=torch.full((3,), float(i + 1))) for i in range(3)]
    good = collate(samples)
    batch = collate([samples[0], bad, samples[2]])
    assert batch.ids == ["s0", "s9", "s2"] and batch.extras["bad_samples"] == [bad]
    assert batch.valid.tolist() == [True, False, True] and good.valid is None and batch.num_valid == 2
    assert batch.batch_size == good.batch_size == 3
    for name in ("image", "text", "audio"):
        assert batch.inputs[name].present.tolist() == [True, False, True]
        assert batch.inputs[name].values[1].abs().sum() == 0
    assert batch.inputs["image"].values.shape == good.inputs["image"].values.shape
    assert not batch.inputs["text"].mask[1].any() and not batch.inputs["audio"].mask[1].any()
    for name in ("label", "scores"):
        assert batch.targets[name].shape == good.targets[name].shape
        assert batch.targets[name].dtype == good.targets[name].dtype and batch.targets[name][1].abs().sum() == 0
    assert batch.extras["caption"] == ["caption 0", None, "caption 2"]


def test_a_batch_of_bad_samples_is_a_batch_of_placeholders():
    from polyfuse.data.errors import BadSample

    collate = MultimodalCollate(["image", "text"], targets=("label", "scores", "caption_ids"),
                                shapes={"image": (1, 4, 4)}, target_shapes={"scores": [3], "caption_ids": [5]},
                                target_dtypes={"caption_ids": "int64"})
    bad = BadSample("s9", "/data/9.jpg", "cannot decode image file")
    batch = collate([bad, None])
    assert batch.batch_size == 2 and batch.valid.tolist() == [False, False] and batch.num_valid == 0
    assert len(batch.extras["bad_samples"]) == 2
    assert batch.inputs["image"].values.shape == (2, 1, 4, 4)
    assert not batch.inputs["image"].present.any() and not batch.inputs["text"].mask.any()
    assert batch.targets["label"].shape == (2,) and batch.targets["label"].dtype == torch.int64
    assert batch.targets["scores"].shape == (2, 3) and batch.targets["scores"].dtype == torch.float32
    assert batch.targets["caption_ids"].shape == (2, 5) and batch.targets["caption_ids"].dtype == torch.int64


def test_pad_to_fixed_length_and_tensor_targets_are_stacked():
    collate = MultimodalCollate(["audio"], targets=("scores", "label"), pad_to={"audio": 16})
    samples = [dict(_sample(i, None, 5 + i), scores=torch.full((3,), float(i))) for i in range(2)]
    batch = collate(samples)
    assert batch.inputs["audio"].values.shape == (2, 16) and batch.inputs["audio"].mask.sum(1).tolist() == [5, 6]
    assert batch.targets["scores"].shape == (2, 3) and batch.targets["label"].tolist() == [0, 1]


def test_a_sequence_absent_from_the_whole_batch_takes_its_fallback_length():
    collate = MultimodalCollate(["audio", "text"], targets=(), shapes={"audio": [16]})
    batch = collate([{"id": "a", "audio": None, "text": None}])
    assert batch.inputs["audio"].values.shape == (1, 16) and not batch.inputs["audio"].mask.any()
    assert batch.inputs["text"].values.shape == (1, 1) and not batch.inputs["text"].present.any()
    assert batch.inputs["text"].values.dtype == torch.int64 and batch.inputs["audio"].values.dtype == torch.float32

"""polyfuse ViLT against Hugging Face ViLT: parity, round trip, loss, bad checkpoints, gradients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (ViltConfig, ViltForImageAndTextRetrieval, ViltForImagesAndTextClassification,  # noqa: E402
                          ViltForQuestionAnswering, ViltModel)

from polyfuse.batch import Batch, ModalityInput  # noqa: E402
from polyfuse.encoders.loading import CheckpointError  # noqa: E402
from polyfuse.models import ViLT, ViLTForVQA  # noqa: E402

HF_CLASSES = {"model": ViltModel, "vqa": ViltForQuestionAnswering, "nlvr2": ViltForImagesAndTextClassification,
              "retrieval": ViltForImageAndTextRetrieval}
BATCH, TEXT, VOCAB = 3, 9, 100


def tiny_config(**changes) -> ViltConfig:
    options = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=64,
                   patch_size=16, vocab_size=VOCAB, max_position_embeddings=16, num_labels=7,
                   modality_type_vocab_size=3, num_images=2)
    options.update(changes)
    return ViltConfig(**options)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    """One randomly initialised, ``save_pretrained`` HF model per task (no download)."""
    torch.manual_seed(0)
    out = {}
    for task, cls in HF_CLASSES.items():
        model = cls(tiny_config()).eval()
        path = tmp_path_factory.mktemp(task)
        model.save_pretrained(path)
        out[task] = (path, model)
    return out


def inputs(task: str) -> dict[str, torch.Tensor]:
    """Padded text and a pixel mask (image 1 padded on the right, image 2 at the bottom), 64x96 images."""
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, VOCAB, (BATCH, TEXT), generator=generator)
    mask = torch.ones(BATCH, TEXT, dtype=torch.long)
    mask[1, 5:], mask[2, 7:] = 0, 0
    images = (2,) if task == "nlvr2" else ()
    pixels = torch.randn(BATCH, *images, 3, 64, 96, generator=generator)
    pixel_mask = torch.ones(BATCH, *images, 64, 96, dtype=torch.long)
    pixel_mask[1, ..., 48:] = 0
    pixel_mask[2, ..., 32:, :] = 0
    return dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, pixel_mask=pixel_mask)


def run_both(hf_model, ours, batch, **extra):
    """HF's call and ours (:meth:`ViLTBase.hf_forward`) on the same inputs and patch-sampling draws."""
    with torch.no_grad():
        torch.manual_seed(11)  # the same patch sampling draws on both sides
        expected = hf_model(**batch, **extra)
        torch.manual_seed(11)
        actual = ours.hf_forward(**batch, **extra)
    return expected, actual


@pytest.mark.parametrize("task", list(HF_CLASSES))
def test_outputs_equal_hf(saved, task):
    path, hf_model = saved[task]
    ours = ViLT.from_hf(path).eval()
    assert ours.task == task
    batch = inputs(task)
    expected, actual = run_both(hf_model, ours, batch)
    if task == "model":
        valid = torch.cat([batch["attention_mask"].bool(),
                           torch.ones(BATCH, expected.last_hidden_state.shape[1] - TEXT, dtype=torch.bool)], dim=1)
        # image tokens: the padded patches of the smaller images are masked (polyfuse zeroes them)
        image_valid = actual.last_hidden_state[:, TEXT:].abs().sum(-1) > 0
        valid[:, TEXT:] &= image_valid
        assert actual.last_hidden_state.shape == expected.last_hidden_state.shape
        diff = (actual.last_hidden_state - expected.last_hidden_state)[valid].abs().max()
        assert diff <= 1e-4
        assert int(valid[:, TEXT:].sum()) < valid[:, TEXT:].numel()  # the pixel mask did mask patches
        torch.testing.assert_close(actual.pooler_output, expected.pooler_output, atol=1e-4, rtol=0)
    else:
        assert actual.logits.shape == expected.logits.shape
        torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=0)


def test_padded_text_positions_change_nothing(saved):
    path, _ = saved["vqa"]
    ours = ViLT.from_hf(path).eval()
    batch = inputs("vqa")
    other = dict(batch, input_ids=torch.where(batch["attention_mask"].bool(), batch["input_ids"], 7))
    with torch.no_grad():
        first, second = ours.hf_forward(**batch), ours.hf_forward(**other)
    torch.testing.assert_close(first.logits, second.logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize("task", list(HF_CLASSES))
def test_round_trip_is_exact(saved, task):
    path, hf_model = saved[task]
    ours = ViLT.from_hf(path)
    exported = ours.to_hf()
    reference = hf_model.state_dict()
    assert set(exported) == set(reference)
    assert all(torch.equal(exported[k], reference[k]) for k in reference)
    fresh = HF_CLASSES[task](ViltConfig(**ours.hf_config(), num_labels=7))
    fresh.load_state_dict(exported, strict=True)
    again = type(ours)(ours.config, labels=ours.labels)
    again.load_state_dict(ours.state_dict(), strict=True)
    target = path.parent / f"{task}_again"
    fresh.save_pretrained(target)
    back = ViLT.from_hf(target)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in ours.state_dict().items())


@pytest.mark.parametrize("task", ["vqa", "nlvr2"])
def test_loss_equals_hf(saved, task):
    path, hf_model = saved[task]
    ours = ViLT.from_hf(path).eval()
    batch = inputs(task)
    if task == "vqa":
        labels = torch.zeros(BATCH, 7)
        labels[0, 2], labels[1, 4], labels[2, 0] = 1.0, 0.6, 0.3
    else:
        labels = torch.tensor([0, 3, 6])
    expected, actual = run_both(hf_model, ours, batch, labels=labels)
    torch.testing.assert_close(actual.loss, expected.loss, atol=1e-5, rtol=1e-5)


def test_backbone_checkpoint_starts_a_fresh_vqa_head(saved):
    path, hf_model = saved["model"]
    ours = ViLT.from_hf(path, task="vqa", labels=["yes", "no", "2"])
    assert ours.load_report.fresh and all(k.startswith("head.") for k in ours.load_report.fresh)
    assert ours.head.vocabulary.answers == ["yes", "no", "2"]
    torch.testing.assert_close(ours.encoders["image"].pos_embed, hf_model.embeddings.position_embeddings)


def test_wrong_shapes_name_the_file_and_keys(saved, tmp_path):
    path, _ = saved["vqa"]
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] = 48  # config disagrees with the weights
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError) as error:
        ViLT.from_hf(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message and "shape mismatch" in message and "fusion.blocks.0.mlp.fc1.weight" in message


def test_missing_keys_name_the_file_and_keys(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    path, _ = saved["vqa"]
    state = load_file(str(path / "model.safetensors"))
    del state["vilt.encoder.layer.1.output.dense.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"missing \(1\).*fusion\.blocks\.1\.mlp\.fc2\.weight"):
        ViLT.from_hf(tmp_path)


def test_non_vilt_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(CheckpointError) as error:
        ViLT.from_hf(tmp_path)
    assert str(tmp_path) in str(error.value) and "'bert' is not a ViLT checkpoint" in str(error.value)


@pytest.mark.parametrize("task", list(HF_CLASSES))
def test_gradients_reach_every_parameter(task):
    torch.manual_seed(0)
    model = ViLT(task=task, num_labels=5, vocab_size=VOCAB, max_text_length=16, modality_type_vocab_size=3, dim=32,
                 depth=2, heads=4, mlp_hidden=64, image_size=64, patch_size=16)
    batch = inputs(task)
    output = model.hf_forward(**batch)
    (output.pooler_output.sum() + (0 if output.logits is None else output.logits.sum())).backward()
    image_types = {"nlvr2": [], "model": ["image_2"], "vqa": ["image_2"], "retrieval": ["image_2"]}[task]
    unused = {f"fusion.project.type_embedding.{name}" for name in image_types}  # the type of an unused image slot
    no_grad = [name for name, p in model.named_parameters()
               if (p.grad is None or p.grad.abs().sum() == 0) and name not in unused]
    assert not no_grad


def test_polyfuse_batch_path_and_attention_maps(saved):
    path, hf_model = saved["vqa"]
    ours = ViLT.from_hf(path).eval()
    ids = torch.randint(1, VOCAB, (2, 6))
    pixels = torch.randn(2, 3, 64, 64)
    batch = Batch({"text": ModalityInput(ids, torch.ones(2, 6, dtype=torch.bool)), "image": ModalityInput(pixels)},
                  extras={"answers": [["LABEL_1"] * 10, ["LABEL_2"] * 10]})
    with torch.no_grad():
        output = ours(batch, return_attention=True)
        expected = hf_model(input_ids=ids, pixel_values=pixels)
    torch.testing.assert_close(output.outputs, expected.logits, atol=1e-4, rtol=0)
    assert set(output.attentions) == {"joint/layer0", "joint/layer1"}
    assert ours.head.loss(output.outputs, batch).ndim == 0


def test_max_image_length_samples_patches(saved):
    path, _ = saved["model"]
    ours = ViLT.from_hf(path, max_image_length=5).eval()
    batch = inputs("model")
    with torch.no_grad():
        output = ours.hf_forward(**batch)
    assert output.last_hidden_state.shape[1] == TEXT + 1 + 5


def test_itm_scores_rank_every_pair(saved):
    path, hf_model = saved["retrieval"]
    ours = ViLT.from_hf(path).eval()
    batch = inputs("retrieval")
    scores = ours.itm_scores(batch["input_ids"], batch["attention_mask"], batch["pixel_values"][:2],
                             batch["pixel_mask"][:2], chunk=2)
    assert scores.shape == (2, BATCH)
    with torch.no_grad():
        expected = hf_model(input_ids=batch["input_ids"][1:2], attention_mask=batch["attention_mask"][1:2],
                            pixel_values=batch["pixel_values"][:1], pixel_mask=batch["pixel_mask"][:1]).logits
    torch.testing.assert_close(scores[0, 1], expected[0, 0], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_hf_model_config_trains_through_the_lit_module(saved, compose_train):
    import hydra

    path, hf_model = saved["vqa"]
    cfg = compose_train(["model=vilt_hf", f"model.model.path={path}", "model.encoders=null", "model.fusion=null",
                         "model.head=null"])
    module = hydra.utils.instantiate(cfg.model)
    assert isinstance(module.model, ViLTForVQA) and module.monitor == "val/vqa_acc"
    exported = module.model.to_hf()
    assert all(torch.equal(exported[k], v) for k, v in hf_model.state_dict().items())


def test_pytorch_bin_checkpoint_loads(saved, tmp_path):
    path, hf_model = saved["vqa"]
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")  # the pre-safetensors layout
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    ours = ViLT.from_hf(tmp_path)
    assert all(torch.equal(v, ours.to_hf()[k]) for k, v in hf_model.state_dict().items())


def test_sampled_patches_match_hf_under_the_same_seed(tmp_path):
    torch.manual_seed(0)
    hf_model = ViltForQuestionAnswering(tiny_config(max_image_length=5)).eval()
    hf_model.save_pretrained(tmp_path)
    ours = ViLT.from_hf(tmp_path).eval()
    assert ours.encoders["image"].max_image_length == 5
    expected, actual = run_both(hf_model, ours, inputs("vqa"))
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=0)

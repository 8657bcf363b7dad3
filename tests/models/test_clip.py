"""polyfuse.models.CLIP against open_clip: parity on scaled-down ViT architectures, zero-shot logits,
exact round trip, refused checkpoints, gradients, retrieval and export of a trained MultimodalModel."""

from __future__ import annotations

import math

import pytest
import torch

from polyfuse.batch import Batch, ModalityInput
from polyfuse.encoders.loading import CheckpointError
from polyfuse.heads import ContrastiveHead, ZeroShotHead
from polyfuse.heads.zero_shot import topk_accuracy
from polyfuse.losses import ContrastiveLoss
from polyfuse.metrics import retrieval_recall
from polyfuse.models import CLIP, MultimodalModel

open_clip = pytest.importorskip("open_clip")
safetensors_torch = pytest.importorskip("safetensors.torch")

TOL = 1e-5  # max abs difference allowed between polyfuse and open_clip (fp32, CPU)
VOCAB, CONTEXT, EOT = 100, 16, 99  # CLIP's end-of-text token has the largest id; padding is 0

# open_clip's own configs, shrunk: each keeps its patch size, head width / text heads and activation
SHRINK = {
    "ViT-B-32-quickgelu": dict(vision=dict(width=128, image_size=64), text_width=64),
    "ViT-B-16": dict(vision=dict(width=128, image_size=32), text_width=64),
    "ViT-L-14": dict(vision=dict(width=128, image_size=28), text_width=96),
    "ViT-H-14": dict(vision=dict(width=160, image_size=28), text_width=128),
}


def overrides(name: str) -> dict:
    """``create_model(name, **overrides)`` arguments: the config of ``name`` with small widths and depths."""
    config = open_clip.get_model_config(name)
    shrink = SHRINK[name]
    vision = {**config["vision_cfg"], "layers": 2, **shrink["vision"]}
    text = {**config["text_cfg"], "layers": 2, "width": shrink["text_width"], "vocab_size": VOCAB,
            "context_length": CONTEXT}
    return {"embed_dim": 32, "vision_cfg": vision, "text_cfg": text}


def randomise(model: torch.nn.Module) -> None:
    """LayerNorms start at (1, 0) and the logit scale at log(1/0.07): perturb them so mis-mapping shows."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.2)
        model.logit_scale.fill_(3.3)


def reference(name: str, seed: int = 0, custom_text: bool = False):
    torch.manual_seed(seed)
    model = open_clip.create_model(name, force_custom_text=custom_text, **overrides(name)).eval()
    randomise(model)
    return model


def save(model: torch.nn.Module, path) -> None:
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def token_ids(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ``(B, CONTEXT)`` ending in EOT, and their mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, EOT - 5, (len(lengths), CONTEXT), generator=generator)
    positions = torch.arange(CONTEXT)[None]
    length = torch.tensor(lengths)[:, None]
    ids = torch.where(positions == length - 1, torch.full_like(ids, EOT), ids)
    mask = positions < length
    return ids.masked_fill(~mask, 0), mask


def tokenize(texts: list[str]) -> torch.Tensor:
    """A deterministic toy tokenizer: one id per word, EOT, 0-padded to the context length."""
    rows = []
    for text in texts:
        words = [1 + sum(map(ord, w)) % (EOT - 2) for w in text.split()][: CONTEXT - 1] + [EOT]
        rows.append(words + [0] * (CONTEXT - len(words)))
    return torch.tensor(rows)


def loaded(name: str, tmp_path, custom_text: bool = False):
    model = reference(name, custom_text=custom_text)
    path = tmp_path / "open_clip_model.safetensors"
    save(model, path)
    extra = {"custom_text": True} if custom_text else {}  # CustomTextCLIP: the text tower under text.*
    return model, CLIP.from_open_clip(name, path, **overrides(name), **extra).eval()


def images_for(name: str, batch: int = 3) -> torch.Tensor:
    size = overrides(name)["vision_cfg"]["image_size"]
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("name", list(SHRINK))
def test_encoders_match_open_clip(tmp_path, name):
    model, ours = loaded(name, tmp_path)
    images = images_for(name)
    ids, mask = token_ids([CONTEXT, 7, 3])
    with torch.no_grad():
        assert (ours.encode_image(images) - model.encode_image(images)).abs().max() <= TOL
        expected_text = model.encode_text(ids)
        assert (ours.encode_text(ids) - expected_text).abs().max() <= TOL
        assert (ours.encode_text(ids, mask=mask) - expected_text).abs().max() <= TOL
        for a, b in zip(ours(images, ids), model(images, ids)):
            assert (a - b).abs().max() <= TOL
    assert ours.embed_dim == 32


@pytest.mark.parametrize("name", ["ViT-B-32-quickgelu", "ViT-L-14"])
def test_zero_shot_logits_match_open_clip(tmp_path, name):
    model, ours = loaded(name, tmp_path)
    classes, templates = ["cat", "dog", "car", "tree", "boat", "lamp"], ["a photo of a {}.", "a drawing of the {}"]
    images = images_for(name, 4)
    with torch.no_grad():
        weights = open_clip.build_zero_shot_classifier(model, tokenize, classes, templates)  # (E, C)
        expected = 100.0 * model.encode_image(images, normalize=True) @ weights
        classifier = ours.zero_shot_classifier(classes, templates, tokenize)
        assert (classifier - weights.T).abs().max() <= TOL
        assert (ours.zero_shot_logits(images, classifier) - expected).abs().max() <= 100 * TOL
    labels = expected.argmax(1)
    assert topk_accuracy(expected, labels, (1, 5)) == {"top1": 100.0, "top5": 100.0}


@pytest.mark.parametrize(("name", "custom_text"), [("ViT-B-16", False), ("ViT-H-14", False), ("ViT-L-14", True)])
def test_round_trip_is_exact(tmp_path, name, custom_text):
    model, ours = loaded(name, tmp_path, custom_text)
    exported = ours.to_open_clip()
    fresh = open_clip.create_model(name, force_custom_text=custom_text, **overrides(name))
    fresh.load_state_dict(exported, strict=True)
    reference_state = model.state_dict()
    assert set(exported) == set(reference_state)
    assert all(torch.equal(exported[k], reference_state[k]) for k in reference_state)
    again = CLIP.from_config(ours.open_clip_config())
    again.load_open_clip_state(exported)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))


def test_unknown_and_non_vit_models_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"ViT-B-32.*model_configs|model_configs.*ViT-B-32"):
        CLIP.from_open_clip("ViT-B-33", tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="ModifiedResNet"):
        CLIP.from_open_clip("RN50", tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="timm"):
        CLIP.from_open_clip("ViT-B-16-SigLIP", tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="no_causal_mask"):
        CLIP.from_open_clip("ViT-L-14-CLIPA", tmp_path / "missing.pt")


def test_mismatched_checkpoints_are_refused(tmp_path):
    model = reference("ViT-B-16")
    path = tmp_path / "b16.safetensors"
    save(model, path)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*(conv1|patch_embed)") as error:
        CLIP.from_open_clip("ViT-B-32-quickgelu", path, **overrides("ViT-B-32-quickgelu"))
    assert str(path) in str(error.value)
    state = model.state_dict()
    del state["visual.transformer.resblocks.1.mlp.c_fc.bias"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing \(1\).*blocks\.1\.mlp\.fc1\.bias"):
        CLIP.from_open_clip("ViT-B-16", tmp_path / "missing.pt", **overrides("ViT-B-16"))
    torch.save({k: v for k, v in state.items() if not k.startswith("visual.")}, tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="visual.conv1.weight"):
        CLIP.from_open_clip("ViT-B-16", tmp_path / "text.pt", **overrides("ViT-B-16"))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    config = overrides("ViT-B-16")
    model = CLIP.from_config(config).train()
    image_features, text_features, scale = model(images_for("ViT-B-16", 4), token_ids([5, 9, 3, CONTEXT])[0])
    ContrastiveLoss()(image_features, text_features, scale).backward()
    starved = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not starved
    assert math.isclose(model.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)


def test_retrieval_with_five_captions_per_image():
    torch.manual_seed(0)
    model = CLIP.from_config(overrides("ViT-B-16")).eval()
    images = images_for("ViT-B-16", 2)
    ids, _ = token_ids([4, 5, 6, 7, 8, 9, 10, 11, 12, 13])
    owner = torch.arange(2).repeat_interleave(5)
    scores = model.retrieval(images, ids, owner, ks=(1, 2), batch_size=3)
    with torch.no_grad():
        similarity = model.encode_image(images, normalize=True) @ model.encode_text(ids, normalize=True).T
    expected = retrieval_recall(similarity, (1, 2), owner)
    assert scores["image_to_text/R@1"] == expected["a_to_b/R@1"] and scores["rsum"] == expected["rsum"]
    assert scores["text_to_image/R@2"] == 100.0  # two images: the right one is always in the top 2


def test_trained_multimodal_model_exports_to_open_clip(tmp_path):
    """A MultimodalModel (CLIP towers + ContrastiveHead with its own projections) becomes a CLIP whose
    embeddings are the head's, and an open_clip model with the same outputs."""
    torch.manual_seed(0)
    config = overrides("ViT-B-16")
    towers = CLIP.from_config(config)
    head = ContrastiveHead(dims={"image": 32, "text": 32}, embed_dim=24, pool="first")
    multimodal = MultimodalModel({"image": towers.visual, "text": towers.text}, None, head).eval()
    images, (ids, mask) = images_for("ViT-B-16", 3), token_ids([16, 5, 2])
    batch = Batch({"image": ModalityInput(images), "text": ModalityInput(ids, mask)})
    clip = CLIP.from_multimodal(multimodal).eval()
    reference_model = open_clip.create_model("ViT-B-16", **{**config, "embed_dim": 24})
    reference_model.load_state_dict(clip.to_open_clip())
    reference_model.eval()
    with torch.no_grad():
        embeddings = multimodal(batch).outputs["embeddings"]
        assert (clip.encode_image(images, normalize=True) - embeddings["image"]).abs().max() <= TOL
        assert (clip.encode_text(ids, normalize=True) - embeddings["text"]).abs().max() <= TOL
        assert (reference_model.encode_text(ids, normalize=True) - embeddings["text"]).abs().max() <= TOL
    directory = clip.save_open_clip(tmp_path / "export")  # open_clip's local-dir layout, read by both
    from_directory = open_clip.create_model(f"local-dir:{directory}").eval()
    again = CLIP.from_open_clip(directory).eval()
    with torch.no_grad():
        assert (from_directory.encode_image(images) - clip.encode_image(images)).abs().max() <= TOL
        assert torch.equal(again.encode_image(images), clip.encode_image(images))


def test_zero_shot_head_classifies_with_the_model_encoders():
    torch.manual_seed(0)
    towers = CLIP.from_config(overrides("ViT-B-16")).eval()
    classes, templates = ["cat", "dog", "car"], ["a {}", "the {} here"]

    def tokenizer(texts: list[str]) -> ModalityInput:
        ids = tokenize(texts)
        return ModalityInput(ids, ids != 0)

    head = ZeroShotHead(dims={"image": 32, "text": 32}, class_names=classes, templates=templates,
                        tokenizer=tokenizer, ks=(1, 5))
    model = MultimodalModel({"image": towers.visual, "text": towers.text}, None, head).eval()
    images = images_for("ViT-B-16", 4)
    batch = Batch({"image": ModalityInput(images), "text": ModalityInput(*token_ids([3, 4, 5, 6]))},
                  targets={"label": torch.tensor([0, 1, 2, 0])})
    with torch.no_grad():
        logits = model(batch).outputs
        expected = towers.zero_shot_logits(images, towers.zero_shot_classifier(classes, templates, tokenize))
    assert (logits - expected).abs().max() <= 100 * TOL
    metrics = head.make_metrics("test")
    head.update_metrics(metrics, logits, batch)
    assert set(metrics.compute()) == {"top1"}  # top-5 of 3 classes is dropped


def test_open_clip_towers_train_through_the_contrastive_head(tmp_path):
    """The fine-tuning path: open_clip towers in a MultimodalModel, ContrastiveHead(projection=False)
    embeds exactly as open_clip does; the trained model exports back without change."""
    from polyfuse.encoders.pretrained import clip_text_from_open_clip, vit_from_open_clip

    model = reference("ViT-B-16")
    path = tmp_path / "open_clip_model.safetensors"
    save(model, path)
    config = {**open_clip.get_model_config("ViT-B-16"), **overrides("ViT-B-16")}
    towers = {"image": vit_from_open_clip(path, config=config, output="pooled"),
              "text": clip_text_from_open_clip(path, config=config)}
    head = ContrastiveHead(dims={"image": 32, "text": 32}, projection=False, pool="first", init_temperature=0.01)
    multimodal = MultimodalModel(towers, None, head).eval()
    images, (ids, mask) = images_for("ViT-B-16", 3), token_ids([16, 5, 2])
    batch = Batch({"image": ModalityInput(images), "text": ModalityInput(ids, mask)})
    with torch.no_grad():
        embeddings = multimodal(batch).outputs["embeddings"]
        assert (embeddings["image"] - model.encode_image(images, normalize=True)).abs().max() <= TOL
        assert (embeddings["text"] - model.encode_text(ids, normalize=True)).abs().max() <= TOL
    exported = CLIP.from_multimodal(multimodal).to_open_clip()
    expected = model.state_dict()
    assert all(torch.equal(exported[k], expected[k]) for k in expected if k != "logit_scale")
    assert exported["logit_scale"].item() == pytest.approx(math.log(100.0))
    with pytest.raises(ValueError, match="one output width"):
        ContrastiveHead(dims={"image": 32, "text": 16}, projection=False)


def test_last_token_pooling_ignores_padding_without_a_mask():
    """AV-digits-style towers pool the last real token: padded ids must not change the embedding."""
    config = overrides("ViT-B-16")
    config["text_cfg"] = {**config["text_cfg"], "pool_type": "last"}
    torch.manual_seed(0)
    model = CLIP.from_config(config).eval()
    ids, mask = token_ids([6, 3])
    with torch.no_grad():
        padded = model.encode_text(ids)
        assert torch.equal(padded, model.encode_text(ids, mask=mask))
        assert torch.allclose(padded[1], model.encode_text(ids[1:, :3])[0], atol=TOL)

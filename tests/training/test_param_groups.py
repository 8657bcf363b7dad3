"""Optimizer parameter groups (training/param_groups.py): which parameter lands in which group for the
default multimodal model, CLIP (against open_clip's own exclusion rule) and ViLT, layer-wise LR decay,
and that the default experiment changes only as docs/baselines.md says (1-d parameters and position /
type embeddings lose weight decay; every LR unchanged)."""

from __future__ import annotations

import re

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from polyfuse.training.param_groups import ParameterGroupSettings, apply_lr_scales, parameter_groups

DEFAULT_EXCLUDED_NAMES = ("pos_embed", "position_embeddings", "token_type_embeddings", "cls_token")


def optimizer_of(cfg) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The training module of ``cfg`` and its optimizer, built as ``configure_optimizers`` builds it."""
    module = hydra.utils.instantiate(cfg.model)
    module.scheduler_factory = None  # the schedule needs a trainer; the groups do not
    return module, module.configure_optimizers()


def settings_of(group: dict) -> dict[str, tuple[float, float]]:
    return {name: (group["weight_decay"], group["lr"]) for name in group["param_names"]}


def per_parameter(optimizer: torch.optim.Optimizer) -> dict[str, tuple[float, float]]:
    """``{parameter name: (weight decay, lr)}``; asserts no parameter is in two groups."""
    out: dict[str, tuple[float, float]] = {}
    for group in optimizer.param_groups:
        for name in group["param_names"]:
            assert name not in out, f"{name} is in two groups"
        out.update(settings_of(group))
    return out


def test_default_experiment_changes_only_as_documented(compose_train):
    cfg = compose_train([])
    module, optimizer = optimizer_of(cfg)
    lr, decay = cfg.model.optimizer.lr, cfg.model.optimizer.weight_decay
    params = per_parameter(optimizer)
    trainable = {name: p for name, p in module.named_parameters() if p.requires_grad}
    assert set(params) == set(trainable)                                  # every parameter, once
    assert {lr_ for _, lr_ in params.values()} == {lr}                    # no LR changes
    excluded = {name for name, (wd, _) in params.items() if wd == 0.0}
    expected = {name for name, p in trainable.items()
                if p.ndim < 2 or any(key in name for key in DEFAULT_EXCLUDED_NAMES)}
    assert excluded == expected
    assert {"model.encoders.image.pos_embed", "model.encoders.text.embeddings.position_embeddings.weight",
            "model.head.classifier.1.bias", "model.fusion.norms.image.weight"} <= excluded
    assert {wd for name, (wd, _) in params.items() if name not in excluded} == {decay}
    assert "model.head.classifier.1.weight" not in excluded


def test_null_optimizer_groups_is_one_group(compose_train):
    cfg = compose_train(["model.optimizer_groups=null"])
    module, optimizer = optimizer_of(cfg)
    assert len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    assert group["weight_decay"] == cfg.model.optimizer.weight_decay
    assert len(group["params"]) == sum(1 for p in module.parameters() if p.requires_grad)


def test_clip_experiment_groups(compose_train):
    cfg = compose_train(["experiment=clip_pretrain_avdigits"])
    _, optimizer = optimizer_of(cfg)
    params = per_parameter(optimizer)
    assert params["model.head.logit_scale"][0] == 0.0
    assert params["model.encoders.image.cls_token"][0] == 0.0
    assert params["model.encoders.image.blocks.0.norm1.weight"][0] == 0.0
    assert params["model.encoders.text.blocks.0.attn.q_proj.bias"][0] == 0.0
    for decayed in ("model.encoders.image.pos_embed", "model.encoders.text.positional_embedding",
                    "model.encoders.image.proj.weight", "model.encoders.text.token_embedding.weight",
                    "model.encoders.image.blocks.0.attn.q_proj.weight"):
        assert params[decayed][0] == pytest.approx(0.2), decayed          # CLIP: wd 0.2 on the rest
    assert {lr for _, lr in params.values()} == {cfg.model.optimizer.lr}


def test_clip_groups_match_open_clip_rule(compose_train):
    """polyfuse.models.CLIP with the CLIP experiment's settings excludes from weight decay exactly what
    open_clip's training script excludes (``ndim < 2 or bn/ln/bias/logit_scale in name``), key by key
    through ``to_open_clip``."""
    pytest.importorskip("open_clip")
    from polyfuse.models.clip import CLIP
    from ..models.test_clip import overrides

    model = CLIP.from_config(overrides("ViT-B-16"))
    settings = OmegaConf.to_container(compose_train(["experiment=clip_pretrain_avdigits"]).model.optimizer_groups)
    settings["head_prefixes"] = []
    groups = parameter_groups(model, settings)
    with torch.no_grad():  # mark every parameter with its group: 1 = decayed, 0 = excluded
        for group in groups:
            for param in group["params"]:
                param.fill_(0.0 if "weight_decay" in group else 1.0)
    exported = model.to_open_clip()
    assert exported
    for key, value in exported.items():
        if not value.is_floating_point() or key == "attn_mask" or key.endswith(".attn_mask"):
            continue
        open_clip_excludes = value.ndim < 2 or any(s in key for s in ("bn", "ln", "bias", "logit_scale"))
        assert torch.all(value == (0.0 if open_clip_excludes else 1.0)), key


def test_vilt_experiment_groups(compose_train):
    cfg = compose_train(["experiment=vilt_vqa_avdigits"])
    _, optimizer = optimizer_of(cfg)
    params = per_parameter(optimizer)
    lr, decay = cfg.model.optimizer.lr, cfg.model.optimizer.weight_decay
    head = {name for name in params if name.startswith("model.head.")}
    assert head and all(params[name][1] == pytest.approx(10 * lr) for name in head)   # lr_mult 10
    assert all(params[name][1] == pytest.approx(lr) for name in params if name not in head)
    for excluded in ("model.fusion.blocks.0.norm1.weight", "model.fusion.norm.weight", "model.head.classifier.1.bias",
                     "model.encoders.text.embeddings.LayerNorm.weight", "model.fusion.blocks.0.attn.q_proj.bias"):
        assert params[excluded][0] == 0.0, excluded
    for decayed in ("model.encoders.image.pos_embed", "model.encoders.image.cls_token",
                    "model.fusion.project.type_embedding.image",
                    "model.encoders.text.embeddings.position_embeddings.weight",
                    "model.head.classifier.1.weight", "model.fusion.pooler.0.weight"):
        assert params[decayed][0] == pytest.approx(decay), decayed   # ViLT decays everything else


def test_vilt_retrieval_keeps_head_lr(compose_train):
    cfg = compose_train(["experiment=vilt_retrieval_avdigits"])
    _, optimizer = optimizer_of(cfg)
    assert {lr for _, lr in per_parameter(optimizer).values()} == {cfg.model.optimizer.lr}


def test_layer_decay_scales_each_block(compose_train):
    cfg = compose_train(["model.optimizer_groups.layer_decay=0.5", "model.optimizer_groups.head_lr_scale=3"])
    _, optimizer = optimizer_of(cfg)
    lr = cfg.model.optimizer.lr
    params = per_parameter(optimizer)
    depth = 1 + max(int(m.group(1)) for name in params
                    if (m := re.match(r"model\.encoders\.image\.blocks\.(\d+)\.", name)))
    assert params["model.encoders.image.pos_embed"][1] == pytest.approx(lr * 0.5 ** (depth + 1))
    assert params["model.encoders.image.patch_embed.proj.weight"][1] == pytest.approx(lr * 0.5 ** (depth + 1))
    for block in range(depth):
        name = f"model.encoders.image.blocks.{block}.attn.q_proj.weight"
        assert params[name][1] == pytest.approx(lr * 0.5 ** (depth - block)), name
    assert params["model.encoders.image.norm.weight"][1] == pytest.approx(lr)           # after the blocks
    assert params["model.encoders.text.embeddings.word_embeddings.weight"][1] < lr      # the text tower too
    assert params["model.fusion.mlp.0.weight"][1] == pytest.approx(lr)                  # not an encoder
    assert params["model.head.classifier.1.weight"][1] == pytest.approx(3 * lr)


def test_schedule_keeps_group_ratios():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    groups = parameter_groups(model, {"head_prefixes": ["0.bias"], "head_lr_scale": 10.0})
    optimizer = apply_lr_scales(torch.optim.AdamW(groups, lr=0.1, weight_decay=0.5))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    optimizer.step()
    scheduler.step()
    by_name = {g["param_names"][0]: g for g in optimizer.param_groups}
    assert by_name["0.bias"]["lr"] == pytest.approx(10 * by_name["0.weight"]["lr"])
    assert by_name["0.bias"]["weight_decay"] == 0.0 and by_name["0.weight"]["weight_decay"] == 0.5


def test_unknown_key_is_refused():
    with pytest.raises(ValueError, match="optimizer_groups: unknown keys"):
        ParameterGroupSettings.from_config({"weight_decay_exclude": []})


def lr_scales(module: torch.nn.Module, settings: dict) -> dict[str, float]:
    """``{parameter name: lr_scale}`` of ``parameter_groups(module, settings)``."""
    return {name: group["lr_scale"] for group in parameter_groups(module, settings) for name in group["param_names"]}


def test_layer_decay_reaches_mobilenet_blocks():
    """MobileNetV2's ``features.N`` (the *_small recipes' image tower) are blocks: the stem ``features.0``
    below block 1 (``features.1``), each block one step above the previous, the projection at 1x."""
    from polyfuse.encoders import MobileNetV2Encoder

    model = torch.nn.Module()
    model.encoders = torch.nn.ModuleDict({"image": MobileNetV2Encoder(in_chans=1, width_mult=0.25, proj_dim=8)})
    scales = lr_scales(model, {"layer_decay": 0.5, "layer_decay_scope": ["encoders."], "head_prefixes": []})
    depth = 18                                                            # features[1:]: 17 bottlenecks + the 1x1 conv
    assert scales["encoders.image.features.0.0.weight"] == pytest.approx(0.5 ** (depth + 1))
    assert scales["encoders.image.features.0.1.bias"] == pytest.approx(0.5 ** (depth + 1))
    for block in range(1, depth + 1):
        for name in (f"encoders.image.features.{block}.{suffix}" for suffix in ("conv.0.0.weight", "0.weight")):
            if name in scales:
                assert scales[name] == pytest.approx(0.5 ** (depth + 1 - block)), name
    assert scales["encoders.image.features.17.conv.0.0.weight"] < scales["encoders.image.features.18.0.weight"] < 1
    assert scales["encoders.image.proj.weight"] == pytest.approx(1.0)

    model.encoders.image.freeze(8)                                        # the recipes' partial freeze
    scales = lr_scales(model, {"layer_decay": 0.8, "layer_decay_scope": ["encoders."], "head_prefixes": []})
    assert not any(name.startswith(("encoders.image.features.0.", "encoders.image.features.8.")) for name in scales)
    assert scales["encoders.image.features.9.conv.0.0.weight"] == pytest.approx(0.8 ** 10)   # depth stays 18


def test_layer_decay_by_name_for_resnet_stages():
    """A module that does not declare its blocks (torchvision ResNet-18) is found by name: ``layer1``..
    ``layer4`` are the blocks, ``conv1`` / ``bn1`` the stem, ``fc`` above the stack."""
    torchvision = pytest.importorskip("torchvision")
    model = torch.nn.Module()
    model.encoders = torch.nn.ModuleDict({"image": torchvision.models.resnet18(weights=None)})
    scales = lr_scales(model, {"layer_decay": 0.5, "layer_decay_scope": ["encoders."], "head_prefixes": []})
    depth = 5                                                             # indices 1..4 as written: layer<i> = id i + 1
    assert scales["encoders.image.conv1.weight"] == pytest.approx(0.5 ** (depth + 1))
    assert scales["encoders.image.bn1.weight"] == pytest.approx(0.5 ** (depth + 1))
    for stage in range(1, 5):
        assert scales[f"encoders.image.layer{stage}.0.conv1.weight"] == pytest.approx(0.5 ** (depth - stage)), stage
        assert scales[f"encoders.image.layer{stage}.1.bn2.bias"] == pytest.approx(0.5 ** (depth - stage)), stage
    assert scales["encoders.image.fc.weight"] == pytest.approx(1.0)


def test_multimodal_layer_decay_with_mobilenet_and_text_blocks(compose_train):
    """The multimodal model with the MobileNetV2 image tower: its ``features.N`` and the text encoder's
    ``blocks.N`` get their own per-block LRs, the fusion stays at 1x and the head at ``head_lr_scale``."""
    cfg = compose_train(["model/encoder@model.encoders.image=mobilenet_v2_scratch", "+model.encoders.image.width_mult=0.25",
                         "model.optimizer_groups.layer_decay=0.5", "model.optimizer_groups.head_lr_scale=3"])
    _, optimizer = optimizer_of(cfg)
    lr = cfg.model.optimizer.lr
    params = per_parameter(optimizer)
    assert params["model.encoders.image.features.0.0.weight"][1] == pytest.approx(lr * 0.5 ** 19)
    assert params["model.encoders.image.features.1.conv.0.0.weight"][1] == pytest.approx(lr * 0.5 ** 18)
    assert params["model.encoders.image.features.18.0.weight"][1] == pytest.approx(lr * 0.5)
    assert params["model.encoders.image.features.18.1.weight"][0] == 0.0            # a norm gain: no decay
    text_depth = 1 + max(int(m.group(1)) for name in params
                         if (m := re.match(r"model\.encoders\.text\.blocks\.(\d+)\.", name)))
    for block in range(text_depth):
        name = f"model.encoders.text.blocks.{block}.attn.q_proj.weight"
        assert params[name][1] == pytest.approx(lr * 0.5 ** (text_depth - block)), name
    assert params["model.encoders.text.embeddings.word_embeddings.weight"][1] == pytest.approx(lr * 0.5 ** (text_depth + 1))
    assert params["model.fusion.mlp.0.weight"][1] == pytest.approx(lr)
    assert params["model.head.classifier.1.weight"][1] == pytest.approx(3 * lr)

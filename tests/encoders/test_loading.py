"""Checkpoint reading and strict loading: bad files give clear errors, execute nothing, load nothing."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from polyfuse.encoders import TextTransformerEncoder, ViTEncoder
from polyfuse.encoders.loading import (CheckpointError, adapt_input_conv, load_checked, read_state_dict,
                                       resolve_path)
from polyfuse.encoders.pretrained import encoder_from_hf, vit_from_timm

from .parity_helpers import TOL, max_diff


class CreatesFile:
    """Unpickling this would create ``path``: the file must never appear."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def small_vit_state() -> dict[str, torch.Tensor]:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=1,
                                                             num_heads=2, num_classes=0)
    return model.state_dict()


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth"
    with open(path, "wb") as handle:
        pickle.dump({"patch_embed.proj.weight": CreatesFile(str(marker))}, handle)
    with pytest.raises(CheckpointError, match="refused to load") as error:
        vit_from_timm(path)
    assert not marker.exists()
    assert str(path) in str(error.value)

    torch.save({"weights": CreatesFile(str(marker))}, path)  # the same inside torch's zip format
    with pytest.raises(CheckpointError, match="refused to load"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_file(tmp_path, suffix):
    state = small_vit_state()
    path = tmp_path / f"vit{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as error:
        vit_from_timm(path)
    assert str(path) in str(error.value)


def test_wrong_architecture_is_named(tmp_path):
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                                                          num_attention_heads=2, intermediate_size=32))
    bert.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="not a timm VisionTransformer checkpoint"):
        vit_from_timm(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(CheckpointError, match="model_type 'gpt2' is not supported"):
        encoder_from_hf(tmp_path)


def test_mismatch_lists_keys_and_loads_nothing(tmp_path):
    state = small_vit_state()
    encoder = ViTEncoder(image_size=16, patch_size=8, in_chans=3, dim=32, depth=1, heads=2)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    from polyfuse.encoders.pretrained.timm_vit import convert_timm_vit

    converted, _ = convert_timm_vit(state)
    converted["blocks.0.mlp.fc1.weight"] = torch.zeros(7, 32)   # wrong shape
    converted["blocks.0.attn.extra.weight"] = torch.zeros(1)    # unexpected
    del converted["norm.bias"]                                   # missing
    with pytest.raises(CheckpointError) as error:
        load_checked(encoder, converted, "ckpt.safetensors")
    message = str(error.value)
    assert "nothing was loaded" in message and "ckpt.safetensors" in message
    assert "missing (1): ['norm.bias']" in message
    assert "unexpected (1): ['blocks.0.attn.extra.weight']" in message
    assert "blocks.0.mlp.fc1.weight: checkpoint (7, 32) vs encoder (128, 32)" in message
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def test_deeper_checkpoint_does_not_partially_load(tmp_path):
    """A checkpoint for another size is an error, never a silent prefix load."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32)
    transformers.BertModel(config).save_pretrained(tmp_path)
    state = read_state_dict(tmp_path)
    small = TextTransformerEncoder(vocab_size=30, max_length=512, dim=16, depth=1, heads=2, mlp_ratio=2.0)
    from polyfuse.encoders.pretrained.hf import BERT_RULES, rename_hf

    converted, _ = rename_hf(state, BERT_RULES)
    with pytest.raises(CheckpointError, match=r"unexpected \(16\)"):
        load_checked(small, converted, str(tmp_path))


def test_directory_prefers_safetensors_and_unwraps(tmp_path):
    state = small_vit_state()
    save_file(state, str(tmp_path / "model.safetensors"))
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, tmp_path / "pytorch_model.bin")
    loaded = read_state_dict(tmp_path)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())

    wrapped = tmp_path / "train.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    assert set(read_state_dict(wrapped)) == set(state)

    torch.save({"state_dict": state, "note": "ok"}, wrapped)
    assert set(read_state_dict(wrapped)) == set(state)


def test_missing_paths_and_packages(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no weights file"):
        read_state_dict(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="not installed"):
        resolve_path("pkg://surely_not_an_installed_package_xyz/model")
    assert resolve_path("pkg://torch/__init__.py").is_file()


def test_adapt_input_conv_matches_timm():
    timm = pytest.importorskip("timm")
    from timm.models._manipulate import adapt_input_conv as timm_adapt

    weight = torch.randn(8, 3, 4, 4)
    for channels in (1, 2, 3, 5):
        assert max_diff(adapt_input_conv(weight, channels), timm_adapt(channels, weight)) <= TOL

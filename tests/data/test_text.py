"""Text pipeline: HF tokenizer from a local file or checkpoint directory, truncation, padding id."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from polyfuse.data import DataFileError, TextPipeline


def test_tokenizer_file_and_directory(tokenizer_file, tmp_path):
    pipeline = TextPipeline(tokenizer_file, max_length=5)
    assert pipeline("a dog on the bench").tolist() == [2, 4, 6, 9, 3]  # truncated, [SEP] kept
    assert pipeline.pad_id == 0 and pipeline.vocab_size == 28
    shutil.copy(tokenizer_file, tmp_path / "tokenizer.json")
    assert TextPipeline(tmp_path).tokenizer.get_vocab_size() == 28


def test_bert_vocab_txt_directory(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog"]))
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    pipeline = TextPipeline(tmp_path, max_length=8)
    assert pipeline("A dog").tolist() == [2, 5, 6, 3] and pipeline.pad_id == 0


def test_missing_tokenizer_is_named_only_when_used(tmp_path):
    pipeline = TextPipeline(tmp_path / "nope")  # instantiating a config needs no file
    with pytest.raises(DataFileError, match="no tokenizer at .*nope.*data.text.tokenizer"):
        pipeline("a dog")


def test_package_paths_resolve_inside_installed_packages():
    import tokenizers

    from polyfuse.data.text import local_path

    assert local_path("pkg://tokenizers/__init__.py") == Path(tokenizers.__file__)
    with pytest.raises(DataFileError, match="package 'not_a_package_xyz' is not installed"):
        TextPipeline("pkg://not_a_package_xyz/model")("a dog")

"""Shared fixtures of the data tests: a word-level tokenizer file and small pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from polyfuse.data import AudioPipeline, ImagePipeline, TextPipeline

from .media import WORDS


@pytest.fixture(scope="session")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A word-level HF ``tokenizer.json`` with ``[PAD] [UNK] [CLS] [SEP]``, adding ``[CLS] ... [SEP]``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.fixture
def pipelines(tokenizer_file: Path) -> dict[str, Any]:
    return {"image": ImagePipeline(size=16, mode="RGB"), "audio": AudioPipeline(sample_rate=8000, max_seconds=0.25),
            "text": TextPipeline(tokenizer_file, max_length=12)}

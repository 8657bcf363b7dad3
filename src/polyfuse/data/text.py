"""Captions and questions -> token ids with a Hugging Face tokenizer read from a local path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from polyfuse.data.io import DataFileError
from polyfuse.resources import PAD_CANDIDATES, load_tokenizer, resolve_path


def local_path(path: str | Path) -> Path:
    """A local path; ``pkg://name/rel/path`` points inside installed package ``name`` (not imported),
    as for encoder checkpoints (:func:`polyfuse.resources.resolve_path`)."""
    return resolve_path(path, error=DataFileError)


def load_hf_tokenizer(path: str | Path) -> Any:
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file, or a directory holding one or a
    ``vocab.txt`` (:func:`polyfuse.resources.load_tokenizer`); ``pkg://`` paths as in :func:`local_path`."""
    return load_tokenizer(path, error=DataFileError, hint="set data.text.tokenizer")


class TextPipeline:
    """``str -> int64 (L,)`` token ids, special tokens included, at most ``max_length`` long.

    The tokenizer is loaded on first use (so configs instantiate without the file present) and
    pickled to DataLoader workers with the dataset. Padding is left to the collate function,
    which uses :attr:`pad_id` and builds the mask.

    Args:
        tokenizer: ``tokenizer.json`` or a local checkpoint directory (use the text encoder's own;
            ``pkg://<package>/<dir>`` for checkpoints shipped as packages).
        max_length: truncation length in tokens. pad_token: overrides the guess among
            ``[PAD]``, ``<pad>``, ``<|endoftext|>``. lowercase: lower-case before tokenising.
    """

    def __init__(self, tokenizer: str | Path, max_length: int = 64, pad_token: str | None = None,
                 lowercase: bool = False) -> None:
        self.path, self.max_length, self.pad_token, self.lowercase = str(tokenizer), int(max_length), pad_token, lowercase
        self._tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            tokenizer = load_hf_tokenizer(self.path)
            tokenizer.no_padding()
            tokenizer.enable_truncation(self.max_length)
            self._tokenizer = tokenizer
        return self._tokenizer

    @property
    def pad_id(self) -> int:
        candidates = (self.pad_token,) if self.pad_token else PAD_CANDIDATES
        for token in candidates:
            index = self.tokenizer.token_to_id(token)
            if index is not None:
                return int(index)
        raise DataFileError(f"tokenizer {self.path} has none of the padding tokens {candidates}; set data.text.pad_token")

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def __call__(self, text: str) -> Tensor:
        ids = self.tokenizer.encode(text.lower() if self.lowercase else text).ids
        return torch.tensor(ids, dtype=torch.long)

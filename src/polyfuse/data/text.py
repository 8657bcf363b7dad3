"""Captions and questions -> token ids with a Hugging Face tokenizer read from a local path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from polyfuse.data.io import DataFileError

PAD_CANDIDATES = ("[PAD]", "<pad>", "<|endoftext|>")


def load_hf_tokenizer(path: str | Path) -> Any:
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file, or a directory holding one or a
    ``vocab.txt`` (converted by ``transformers.AutoTokenizer`` with ``local_files_only=True``)."""
    from tokenizers import Tokenizer

    path = Path(path).expanduser()
    file = path / "tokenizer.json" if path.is_dir() else path
    if file.is_file():
        try:
            return Tokenizer.from_file(str(file))
        except Exception as error:  # tokenizers raises plain Exception subclasses
            raise DataFileError(f"cannot read tokenizer file {file}: {error}") from error
    if path.is_dir() and (path / "vocab.txt").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path), local_files_only=True).backend_tokenizer
    raise DataFileError(f"no tokenizer at {path} (expected a tokenizer.json file, or a directory with "
                        "tokenizer.json or vocab.txt; set data.text.tokenizer)")


class TextPipeline:
    """``str -> int64 (L,)`` token ids, special tokens included, at most ``max_length`` long.

    The tokenizer is loaded on first use (so configs instantiate without the file present) and
    pickled to DataLoader workers with the dataset. Padding is left to the collate function,
    which uses :attr:`pad_id` and builds the mask.

    Args:
        tokenizer: ``tokenizer.json`` or a local checkpoint directory (use the text encoder's own).
        max_length: truncation length in tokens. pad_token: overrides the guess among
            ``[PAD]``, ``<pad>``, ``<|endoftext|>``. lowercase: lower-case before tokenising.
    """

    def __init__(self, tokenizer: str | Path, max_length: int = 64, pad_token: str | None = None,
                 lowercase: bool = False) -> None:
        self.path, self.max_length, self.pad_token, self.lowercase = Path(tokenizer), int(max_length), pad_token, lowercase
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

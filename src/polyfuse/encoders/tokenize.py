"""Tokenisation for pretrained text encoders, from the checkpoint's own local directory.

* :class:`TextTokenizer`: a Hugging Face ``tokenizer.json`` (or a ``vocab.txt`` directory, built
  by transformers offline) -> :class:`~polyfuse.batch.ModalityInput` with ids and padding mask.
* :class:`TokenIdRemap`: lets a pretrained encoder read ids of another word-level vocabulary (a
  dataset's own tokenizer), mapping each word to the single checkpoint token it tokenises to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from polyfuse.batch import ModalityInput
from polyfuse.encoders.loading import CheckpointError, resolve_path
from polyfuse.resources import PAD_CANDIDATES, load_tokenizer


def load_backend_tokenizer(path: str | Path):
    """A ``tokenizers.Tokenizer`` for a checkpoint (:func:`polyfuse.resources.load_tokenizer`)."""
    return load_tokenizer(path, error=CheckpointError)


def _pad_token(path: Path, tokenizer) -> str:
    config = (path if path.is_dir() else path.parent) / "tokenizer_config.json"
    if config.is_file():
        pad = json.loads(config.read_text()).get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        if pad is not None and tokenizer.token_to_id(pad) is not None:
            return pad
    for candidate in PAD_CANDIDATES:
        if tokenizer.token_to_id(candidate) is not None:
            return candidate
    raise CheckpointError(f"{path}: cannot tell the padding token (tried tokenizer_config.json, {PAD_CANDIDATES})")


class TextTokenizer:
    """Strings -> ``ModalityInput(values=(B, L) int64 ids, mask=(B, L) bool)``, right-padded.

    Uses the tokenizer saved beside the checkpoint, so ids are exactly those the source model
    was trained with (special tokens included). Longer texts are truncated to ``max_length``
    tokens with the special tokens kept.
    """

    def __init__(self, path: str | Path, max_length: int | None = 128) -> None:
        self.path = resolve_path(path)
        self.tokenizer = load_backend_tokenizer(self.path)
        if max_length is not None:
            self.tokenizer.enable_truncation(max_length)
        self.pad_token = _pad_token(self.path, self.tokenizer)
        self.pad_id = int(self.tokenizer.token_to_id(self.pad_token))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __call__(self, texts: Sequence[str]) -> ModalityInput:
        encodings = self.tokenizer.encode_batch(list(texts))
        length = max(max((len(e.ids) for e in encodings), default=1), 1)
        ids = torch.full((len(encodings), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(encodings), length, dtype=torch.bool)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = torch.tensor(encoding.ids, dtype=torch.long)
            mask[row, : len(encoding.ids)] = True
        return ModalityInput(ids, mask)


class TokenIdRemap(nn.Module):
    """Ids of a source word-level vocabulary -> ids of a pretrained model's (sub-word) vocabulary.

    Built by :meth:`between`: each source token is tokenised once by the target tokenizer into
    one or more pieces (special tokens map by name: ``[CLS]``, ``[SEP]``, ``[PAD]``...); a token the
    target only knows as ``[UNK]`` is refused, and named. Since a word-level tokenizer splits on
    whitespace as BERT's pre-tokenizer does, the re-mapped ids are the ids the checkpoint's own
    tokenizer gives the same text. ``table: (V_source, K)`` holds the pieces (``-1`` = none).
    """

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table.long())

    @classmethod
    def between(cls, source: str | Path, target: str | Path) -> "TokenIdRemap":
        """Map the vocabulary of tokenizer ``source`` onto the tokenizer stored at ``target``."""
        source_tok, target_tok = load_backend_tokenizer(source), load_backend_tokenizer(target)
        vocab = source_tok.get_vocab(with_added_tokens=True)
        unknown = {target_tok.token_to_id(t) for t in ("[UNK]", "<unk>")} - {None}
        pieces: dict[int, list[int]] = {}
        unmapped: list[str] = []
        for token, index in vocab.items():
            special = target_tok.token_to_id(token) if token.startswith(("[", "<")) else None
            ids = [special] if special is not None else target_tok.encode(token, add_special_tokens=False).ids
            if not ids or (special is None and any(i in unknown for i in ids)):
                unmapped.append(token)
            pieces[index] = ids
        if unmapped:
            raise CheckpointError(f"{len(unmapped)} tokens of {source} are unknown to the tokenizer at {target}: "
                                  f"{sorted(unmapped)[:20]}; tokenise the text with the checkpoint's tokenizer instead")
        table = torch.full((len(vocab), max(len(p) for p in pieces.values())), -1, dtype=torch.long)
        for index, ids in pieces.items():
            table[index, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return cls(table)

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``ids: (B, L)`` source ids + mask -> ``(B, L')`` target ids + mask ``(B, L')`` (``L' >= L``)."""
        if ids.numel() and int(ids.max()) >= self.table.shape[0]:
            raise ValueError(f"token id {int(ids.max())} is outside the {self.table.shape[0]}-token input vocabulary")
        batch = ids.shape[0]
        real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask
        pieces = self.table[ids]                                       # (B, L, K)
        keep = ((pieces >= 0) & real[..., None]).reshape(batch, -1)    # (B, L * K)
        pieces = pieces.reshape(batch, -1)
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices  # kept pieces first, in order
        length = max(int(keep.sum(1).max()), 1)
        new_ids = pieces.gather(1, order)[:, :length].clamp_min(0)
        new_mask = keep.gather(1, order)[:, :length]
        return new_ids * new_mask, new_mask

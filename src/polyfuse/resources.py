"""Local resources shared by the data and encoder layers: ``pkg://`` paths and HF tokenizers.

Nothing here downloads. ``pkg://<package>/<relative path>`` points inside an installed package
(found without importing it), which is how checkpoints and tokenizers shipped as pip packages are
named in configs. Each caller passes the error type of its own layer (``DataFileError`` for
datasets, ``CheckpointError`` for encoders) and a hint on what to change, so that messages name
the file and the config key.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

#: padding tokens of the usual tokenizers (BERT, RoBERTa / T5, CLIP), tried in this order
PAD_CANDIDATES = ("[PAD]", "<pad>", "<|endoftext|>")


def resolve_path(path: str | Path, *, error: type[Exception] = FileNotFoundError, hint: str = "") -> Path:
    """A local path; ``pkg://name/rel/path`` resolves inside installed package ``name`` (not imported)."""
    text = str(path)
    if not text.startswith("pkg://"):
        return Path(text).expanduser()
    package, _, relative = text[len("pkg://"):].partition("/")
    spec = importlib.util.find_spec(package) if package and "." not in package else None
    if spec is None or not spec.submodule_search_locations:
        raise error(f"{text}: package {package!r} is not installed{f' ({hint})' if hint else ''}")
    return Path(list(spec.submodule_search_locations)[0]) / relative


def load_tokenizer(path: str | Path, *, error: type[Exception] = FileNotFoundError, hint: str = "") -> Any:
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file or a directory holding one, with the
    saved padding / truncation settings removed (they are the caller's choice).

    A directory with only ``vocab.txt`` (older BERT checkpoints) gets BERT's WordPiece pipeline,
    lower-casing per its ``tokenizer_config.json`` (``do_lower_case``, default true).
    """
    from tokenizers import Tokenizer

    resolved = resolve_path(path, error=error, hint=hint)
    file = resolved / "tokenizer.json" if resolved.is_dir() else resolved
    if file.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(file))
        except Exception as cause:  # tokenizers raises plain Exception subclasses
            raise error(f"{file}: not a readable tokenizer.json ({cause})") from cause
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return tokenizer
    if resolved.is_dir() and (resolved / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        config_file = resolved / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        return BertWordPieceTokenizer(str(resolved / "vocab.txt"), lowercase=bool(config.get("do_lower_case", True)),
                                      strip_accents=config.get("strip_accents"))._tokenizer
    raise error(f"no tokenizer at {resolved} (expected a tokenizer.json file, or a directory with tokenizer.json "
                f"or vocab.txt{f'; {hint}' if hint else ''})")

"""``auto``'s choices kept across runs: a small JSON file, keyed by device, case, shape bucket and versions.

A job then pays the parity probe and the timing once per machine and library version, not at every
start. The file is ``$POLYFUSE_AUTO_CACHE`` when set (``off`` or empty: no file at all), else
``$XDG_CACHE_HOME/polyfuse/attention_auto.json`` (``~/.cache/...``). Each entry's key starts with
the torch, triton and polyfuse versions (polyfuse's with a hash of the attention sources, so an
edited kernel is probed again) and the device name, so a change of any of them misses.

A file that cannot be read or parsed is ignored with one warning and rewritten at the next save;
writes go to a temporary file renamed into place, so concurrent processes (DDP ranks) never leave a
torn file. Layout: ``{"format": 1, "choices": {key: backend}, "parity": {key: [backends]}}``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

import torch

ENV_VAR = "POLYFUSE_AUTO_CACHE"
FORMAT = 1
MAX_ENTRIES = 2000


def cache_path() -> Path | None:
    """The cache file, or None when ``POLYFUSE_AUTO_CACHE`` is ``off`` or empty."""
    value = os.environ.get(ENV_VAR)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "false", "none") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "polyfuse" / "attention_auto.json"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


@functools.cache
def library_versions() -> str:
    """``torch=...;triton=...;polyfuse=...+<hash of polyfuse/attention/**/*.py>``."""
    digest = hashlib.sha1()
    root = Path(__file__).resolve().parent
    for source in sorted(root.rglob("*.py")):
        digest.update(source.read_bytes())
    return f"torch={torch.__version__};triton={_version('triton')};polyfuse={_version('polyfuse')}+{digest.hexdigest()[:10]}"


def device_name(device: torch.device) -> str:
    """A GPU's model name, or the CPU architecture and intra-op thread count (what a timing depends on)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}-{platform.machine()}-{torch.get_num_threads()}threads"


def entry_key(device: torch.device, fields: tuple) -> str:
    """The file key of a choice or parity result: versions, device name, then the key's fields."""
    return "|".join([library_versions(), device_name(device), *map(str, fields)])


class ChoiceFile:
    """The cache file of one process: read once on first use, merged and rewritten on each save."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, dict] | None = None
        self._write_failed = False

    def _read(self, warn: bool) -> dict[str, dict]:
        empty: dict[str, dict] = {"choices": {}, "parity": {}}
        if not self.path.exists():
            return empty
        try:
            data = json.loads(self.path.read_text())
            if not (isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("choices"), dict)
                    and isinstance(data.get("parity"), dict)):
                raise ValueError(f"expected {{'format': {FORMAT}, 'choices': {{...}}, 'parity': {{...}}}}")
            return {"choices": dict(data["choices"]), "parity": dict(data["parity"])}
        except (OSError, ValueError) as error:  # JSONDecodeError is a ValueError
            if warn:
                warnings.warn(f"attention backend 'auto': ignoring its unreadable cache {self.path} ({error}); "
                              "it is rewritten with the next choice", RuntimeWarning, stacklevel=3)
            return empty

    @property
    def data(self) -> dict[str, dict]:
        if self._data is None:
            self._data = self._read(warn=True)
        return self._data

    def choice(self, key: str) -> str | None:
        value = self.data["choices"].get(key)
        return value if isinstance(value, str) else None

    def parity(self, key: str) -> list[str] | None:
        value = self.data["parity"].get(key)
        return list(value) if isinstance(value, list) and all(isinstance(n, str) for n in value) else None

    def save(self, choices: dict[str, str], parity: dict[str, list[str]]) -> None:
        """Merge the entries into the file (what other processes wrote meanwhile is kept)."""
        merged = self._read(warn=False)
        for section, new in (("choices", choices), ("parity", parity)):
            merged[section].update(new)
            self.data[section].update(new)
            while len(merged[section]) > MAX_ENTRIES:  # oldest first (dicts keep insertion order)
                merged[section].pop(next(iter(merged[section])))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=self.path.name, suffix=".tmp",
                                             delete=False) as handle:
                json.dump({"format": FORMAT, **merged}, handle, indent=1, sort_keys=True)
            os.replace(handle.name, self.path)
        except OSError as error:
            if self._write_failed:
                return
            self._write_failed = True
            warnings.warn(f"attention backend 'auto': cannot write its cache {self.path} ({error}); set "
                          f"{ENV_VAR}=off or to a writable file", RuntimeWarning, stacklevel=3)

"""Reading checkpoints from local files, safely, and loading them strictly.

* Only local paths: a file, a Hugging Face ``save_pretrained`` directory, or ``pkg://<package>/<path>``
  for files shipped inside an installed Python package (located without importing it).
* safetensors is preferred; anything else goes through ``torch.load(..., weights_only=True)``, so a
  pickle holding arbitrary objects is refused before any of its code runs.
* :func:`load_checked` loads all-or-nothing: missing, unexpected or mis-shaped keys raise a
  :class:`CheckpointError` that lists the first mismatches; keys a converter deliberately drops
  (classifier heads, poolers) are reported in :class:`LoadReport`, never silently.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse import resources
from polyfuse.errors import UserInputError

log = logging.getLogger(__name__)

StateDict = dict[str, Tensor]
MAX_LISTED = 10
DIRECTORY_FILES = ("model.safetensors", "model.safetensors.index.json", "open_clip_model.safetensors",
                   "pytorch_model.bin", "open_clip_pytorch_model.bin")
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")


class CheckpointError(UserInputError, RuntimeError):
    """A checkpoint cannot be read, or does not fit the encoder it is loaded into."""


@dataclass
class LoadReport:
    """What :func:`load_checked` did: the source, tensors loaded, keys dropped, keys left as initialised."""

    source: str
    loaded: int
    ignored: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)


def resolve_path(path: str | Path) -> Path:
    """A local path; ``pkg://name/rel/path`` resolves inside installed package ``name`` (not imported)."""
    return resources.resolve_path(path, error=CheckpointError, hint="install its extra, see docs/encoders.md")


def checkpoint_file(path: str | Path) -> Path:
    """The weights file for ``path``: the file itself, or the preferred file inside a directory."""
    resolved = resolve_path(path)
    if resolved.is_file():
        return resolved
    if resolved.is_dir():
        for name in DIRECTORY_FILES:
            if (resolved / name).is_file():
                return resolved / name
        listing = sorted(p.name for p in resolved.iterdir())[:MAX_LISTED]
        raise CheckpointError(f"{resolved}: no weights file (looked for {', '.join(DIRECTORY_FILES)}); "
                              f"it contains {listing}")
    raise CheckpointError(f"checkpoint not found: {resolved}")


def read_state_dict(path: str | Path) -> StateDict:
    """Tensors of a checkpoint file or directory, on CPU; never executes code from the file.

    Training checkpoints that wrap the weights (``{"state_dict": ...}``) are unwrapped and a
    ``module.`` (DDP) prefix is removed.
    """
    file = checkpoint_file(path)
    if file.name.endswith(".index.json"):
        return _read_sharded(file)
    if file.suffix == ".safetensors":
        return _read_safetensors(file)
    return _read_pickle(file)


def _read_safetensors(file: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{file}: not a readable safetensors file, truncated or corrupt ({error})") from error


def _read_sharded(index: Path) -> StateDict:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{index}: malformed shard index ({error})") from error
    state: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        state.update(_read_safetensors(index.parent / shard))
    return state


def _read_pickle(file: Path) -> StateDict:
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{file}: refused to load: the pickle holds objects other than tensors and plain containers "
            f"(torch.load weights_only=True: {first_line}). Nothing from it was executed; convert the "
            "checkpoint to safetensors from a trusted environment.") from error
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{file}: not a readable PyTorch checkpoint, truncated or corrupt ({error})") from error
    return _unwrap(obj, file)


def _unwrap(obj: object, file: Path) -> StateDict:
    for _ in range(3):  # {"state_dict": {"module": {...}}} and the like
        if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{file}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise CheckpointError(f"{file}: expected a state dict (name -> tensor); entries {not_tensors[:MAX_LISTED]} "
                              "are not tensors")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def require(state: Mapping[str, Tensor], key: str, source: str, kind: str) -> Tensor:
    """``state[key]``, or a :class:`CheckpointError` saying the checkpoint is not a ``kind``."""
    if key not in state:
        first = sorted(state)[:MAX_LISTED]
        raise CheckpointError(f"{source}: no {key!r}: this is not a {kind} checkpoint (its first keys: {first})")
    return state[key]


def count_indexed(state: Mapping[str, Tensor], prefix: str) -> int:
    """Number of consecutive blocks ``<prefix>0.``, ``<prefix>1.``, ... present in ``state``."""
    depth = 0
    while any(k.startswith(f"{prefix}{depth}.") for k in state):
        depth += 1
    return depth


def load_checked(module: nn.Module, state: Mapping[str, Tensor], source: str,
                 ignored: Iterable[str] = (), fresh_prefixes: tuple[str, ...] = ("proj.",)) -> LoadReport:
    """Load ``state`` into ``module`` only if every key and shape matches; else raise, loading nothing.

    Args:
        module: the target; its persistent parameters and buffers must all be in ``state``, except
            those under ``fresh_prefixes`` (a projection the user added, trained from scratch).
        state: converted state dict (polyfuse names).
        source: the file, for messages. ignored: keys the converter dropped on purpose (reported).
    """
    expected = module.state_dict()
    fresh = [k for k in expected if k not in state and k.startswith(fresh_prefixes)]
    missing = [k for k in expected if k not in state and k not in fresh]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [f"{k}: checkpoint {tuple(state[k].shape)} vs encoder {tuple(expected[k].shape)}"
                  for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or mis_shaped:
        parts = [f"{source} does not fit {type(module).__name__}; nothing was loaded."]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mis_shaped)):
            if items:
                more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
                parts.append(f"  {title} ({len(items)}): {items[:MAX_LISTED]}{more}")
        raise CheckpointError("\n".join(parts))
    loaded = {k: v.to(expected[k].dtype) for k, v in state.items()}
    loaded.update({k: expected[k] for k in fresh})
    module.load_state_dict(loaded, strict=True)
    report = LoadReport(source, len(state), sorted(ignored), fresh)
    if report.ignored:
        log.info("%s: loaded %d tensors into %s; ignored %d keys not used by the encoder: %s", source,
                 report.loaded, type(module).__name__, len(report.ignored), report.ignored[:MAX_LISTED])
    return report


def build_loaded(cls: Callable[..., nn.Module], kwargs: Mapping[str, Any], options: Mapping[str, Any],
                 state: Mapping[str, Tensor], source: str, ignored: Iterable[str] = ()) -> nn.Module:
    """``cls(**kwargs)`` with the caller's ``options`` overriding ``kwargs``, ``state`` loaded through
    :func:`load_checked`, then frozen as ``options["freeze"]`` asks (after loading: a frozen part
    keeps the checkpoint's values). The common tail of every checkpoint builder."""
    options = dict(options)
    freeze = options.pop("freeze", False)
    module = cls(**{**kwargs, **options})
    load_checked(module, state, source, ignored)
    module.freeze(freeze)
    return module


def split_fused(weight: Tensor, parts: int = 3) -> tuple[Tensor, ...]:
    """Split a fused ``qkv`` weight ``(3 D, ...)`` or bias ``(3 D,)`` into q, k, v."""
    if weight.shape[0] % parts:
        raise CheckpointError(f"fused projection of {weight.shape[0]} rows is not divisible into {parts} parts")
    return tuple(t.clone() for t in weight.chunk(parts, dim=0))


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """Adapt a first-layer conv ``(O, C, kh, kw)`` to ``in_chans`` inputs (timm ``adapt_input_conv``).

    One channel: the RGB filters are summed (a grey image seen as three equal channels). Other
    counts: the filters are tiled and rescaled by ``C / in_chans`` to keep activations' scale.
    """
    channels = weight.shape[1]
    if in_chans == channels:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = math.ceil(in_chans / channels)
    return weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (channels / in_chans)


def resize_pos_embed(pos: Tensor, new_grid: int, num_prefix_tokens: int) -> Tensor:
    """Resample learned 2-D positions ``(1, prefix + g*g, D)`` to a ``new_grid`` square, bicubic.

    Matches timm's ``resample_abs_pos_embed`` (antialiased bicubic); prefix tokens are kept.
    """
    prefix, grid_tokens = pos[:, :num_prefix_tokens], pos[:, num_prefix_tokens:]
    old_grid = math.isqrt(grid_tokens.shape[1])
    if old_grid * old_grid != grid_tokens.shape[1]:
        raise CheckpointError(f"position table of {grid_tokens.shape[1]} patch tokens is not a square grid")
    if old_grid == new_grid:
        return pos
    dim = pos.shape[-1]
    grid = grid_tokens.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", antialias=True, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim).to(pos.dtype)
    return torch.cat([prefix, grid], dim=1)

"""Refuse configs that would make ``hydra.utils.instantiate`` call code outside trusted modules.

A run directory's ``config.yaml`` is data someone else may have written: rebuilding a model from it
(``polyfuse-eval``, ``polyfuse-explain``, :func:`polyfuse.reporting.runs.load_model`,
``polyfuse.load``) calls every ``_target_`` it names, and ``_target_: os.system`` would run a
shell command. Weights are already loaded without pickle (``weights_only`` / safetensors); this
module does the same for the config: :func:`check_targets` walks every ``_target_`` (plain and
``_partial_``) and every ``path:`` given to ``hydra.utils.get_class`` / ``get_method`` /
``get_object``, and accepts only callables whose module is on :data:`ALLOWED_MODULES`.

It is a pure function over an OmegaConf or plain ``dict``/``list`` config, so any code that
rebuilds from a run directory can call it before instantiating::

    cfg = OmegaConf.load(run_dir / "config.yaml")
    check_targets(cfg, trusted=trust_config, source=run_dir / "config.yaml")
    model = hydra.utils.instantiate(cfg.model)

It is best-effort defence, not a sandbox: a trusted module can still do harm with arguments
(which is why :data:`REFUSED_MODULES`, private names such as ``torch._C`` and
``trust_remote_code: true`` are refused as well).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from polyfuse.errors import UntrustedConfigError

__all__ = ["ALLOWED_MODULES", "REFUSED_MODULES", "GETTER_TARGETS", "untrusted_targets", "check_targets"]

# top-level packages whose callables a config may name
ALLOWED_MODULES: tuple[str, ...] = ("polyfuse", "torch", "torchvision", "timm", "transformers", "open_clip",
                                    "lightning", "torchmetrics")
# inside allowed packages: entry points that unpickle, load or compile code, or write files; private
# names (a component starting with `_`, e.g. `torch._C`) are refused too
REFUSED_MODULES: tuple[str, ...] = ("torch.hub", "torch.utils.cpp_extension", "torch.package", "torch.jit.load",
                                    "torch.ops.load_library", "torch.classes.load_library", "torch.load",
                                    "torch.save", "torch.serialization", "torch.export.load",
                                    "transformers.dynamic_module_utils")
# `_target_` values that turn their `path:` argument into a class / function
GETTER_TARGETS = frozenset({"hydra.utils.get_class", "hydra.utils.get_method", "hydra.utils.get_object"})


def _within(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _allowed(name: str, allowed: Sequence[str]) -> bool:
    private = any(part.startswith("_") for part in name.split("."))
    return _within(name, allowed) and not _within(name, REFUSED_MODULES) and not private


def _target_name(value: Any) -> str:
    """A ``_target_`` as a dotted name (a class / function object in a Python-built dict too)."""
    if isinstance(value, str):
        return value.strip()
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(value)


def _items(node: Any) -> Iterator[tuple[str | int, Any, bool]]:
    """``(key, value, readable)`` of a mapping / sequence node; interpolations are resolved, and a
    value that cannot be resolved (or is ``???``) comes back unreadable."""
    if isinstance(node, (DictConfig, ListConfig)):
        keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for key in keys:
            try:
                yield key, node[key], True
            except Exception:  # an unresolvable interpolation or a missing value (`???`)
                yield key, None, False
    elif isinstance(node, dict):
        yield from ((key, value, True) for key, value in node.items())
    elif isinstance(node, (list, tuple)):
        yield from ((index, value, True) for index, value in enumerate(node))


def _join(prefix: str, key: str | int) -> str:
    return f"{prefix}[{key}]" if isinstance(key, int) else (f"{prefix}.{key}" if prefix else str(key))


def untrusted_targets(cfg: Any, allowed: Sequence[str] = ALLOWED_MODULES, _prefix: str = ""
                      ) -> list[tuple[str, str]]:
    """Every ``(key path, target)`` in ``cfg`` that is not allowed, e.g. ``("model.fusion._target_",
    "os.system")``. Key paths use dots and ``[i]`` for list items. A top-level ``hydra`` node (Hydra's
    launcher and sweeper, saved by some runs) is skipped: nothing rebuilds it from a run directory."""
    problems: list[tuple[str, str]] = []
    entries = list(_items(cfg))
    values = {key: (value, readable) for key, value, readable in entries}
    target = values.get("_target_")
    if target is not None and target != (None, True):
        path = _join(_prefix, "_target_")
        name = _target_name(target[0]) if target[1] else "<unresolvable interpolation>"
        if name in GETTER_TARGETS:
            got = values.get("path")
            located = _target_name(got[0]) if got and got[1] and got[0] is not None else "<missing path>"
            if not _allowed(located, allowed):
                problems.append((_join(_prefix, "path"), located))
        elif not _allowed(name, allowed):
            problems.append((path, name))
    for key, value, readable in entries:
        if not _prefix and key == "hydra":  # Hydra's own launcher / sweeper settings: never rebuilt from a run
            continue
        if key == "trust_remote_code" and readable and value is True:
            problems.append((_join(_prefix, key), "trust_remote_code=true (downloads and runs model code)"))
        if isinstance(value, (DictConfig, ListConfig, dict, list, tuple)):
            problems += untrusted_targets(value, allowed, _join(_prefix, key))
    return problems


def check_targets(cfg: Any, trusted: bool = False, *, allowed: Sequence[str] = ALLOWED_MODULES,
                  source: str | Path | None = None, flag: str = "trust_config=true") -> None:
    """Raise :class:`~polyfuse.errors.UntrustedConfigError` if ``cfg`` names a callable outside
    ``allowed`` (top-level modules), unless ``trusted``.

    Args:
        cfg: an OmegaConf config or plain ``dict`` / ``list`` (e.g. a run's ``config.yaml``).
        trusted: the caller vouches for the config: nothing is checked.
        allowed: module prefixes whose callables are accepted.
        source: where the config came from, named in the error.
        flag: how the user of the calling tool says "I trust it", named in the error
            (``trust_config=true`` for the Hydra CLIs, ``trust_config=True`` in Python).
    """
    if trusted:
        return
    if OmegaConf.is_config(cfg) or isinstance(cfg, (dict, list, tuple)):
        problems = untrusted_targets(cfg, allowed)
    else:
        raise TypeError(f"check_targets: expected an OmegaConf config, dict or list, got {type(cfg).__name__}")
    if not problems:
        return
    where = f"{source}: " if source else ""
    lines = "\n".join(f"  {path}: {target}" for path, target in problems[:10])
    more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    raise UntrustedConfigError(
        f"{where}refusing to build from this config: it names callables outside the trusted modules "
        f"({', '.join(allowed)}):\n{lines}{more}\n"
        f"Building it would run that code. If you trust where this config came from, pass {flag}.")

"""Optimizer parameter groups from config: weight-decay exclusions, layer-wise LR decay, head LR multiplier.

:func:`parameter_groups` sorts every trainable parameter of a module into groups keyed by
``(weight decay on/off, LR scale)`` -- the settings the papers' code uses and one flat group cannot
express:

* **no weight decay** on parameters with fewer than ``exclude_ndim_below`` dimensions (biases, norm
  gains, ``logit_scale`` / ``logit_bias``, 0-/1-d learned vectors) and on names matching one of
  ``exclude_names`` (regular expressions searched in the full parameter name: position / type
  embeddings, class tokens). open_clip's rule is ``ndim < 2`` + ``bias`` / ``ln`` / ``bn`` /
  ``logit_scale`` (``open_clip_train/main.py``), timm's ``ndim <= 1`` + ``.bias`` + the model's
  ``no_weight_decay()`` names (``timm.optim.param_groups_weight_decay``), ViLT's the names ``bias`` and
  the LayerNorm weights (``vilt/modules/vilt_utils.py``, ``set_schedule``);
* **layer-wise LR decay** (BEiT, Bao et al., 2022; timm's ``param_groups_layer_decay``): in every
  stack of numbered blocks (``<stack>.blocks.<i>.``, also ``layers`` / ``resblocks`` / ``layer``)
  under one of ``layer_decay_scope``, block ``i`` trains at ``layer_decay ** (depth - i)`` times the
  LR, the stack's embeddings (names matching ``embedding_pattern``) at ``layer_decay ** (depth + 1)``
  and its other parameters (final norm, projection) at 1;
* **head LR multiplier** (ViLT fine-tunes its VQA / NLVR2 classifier at 10x): parameters under
  ``head_prefixes`` train at ``head_lr_scale`` times the LR.

Groups carry ``lr_scale`` and ``weight_decay`` (``0.0`` when excluded; otherwise the optimizer's
default stays); :func:`apply_lr_scales` multiplies each group's LR by its ``lr_scale`` once the
optimizer is built, so the base LR stays where the config puts it (``model.optimizer.lr``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from torch import nn
from torch.optim import Optimizer

__all__ = ["ParameterGroupSettings", "parameter_groups", "apply_lr_scales", "group_of"]

BLOCK_PATTERN = r"^(?P<stack>.+?)\.(?:blocks|layers|resblocks|layer)\.(?P<index>\d+)\."


@dataclass(frozen=True)
class ParameterGroupSettings:
    """The ``model.optimizer_groups`` config keys (see the module docstring)."""

    exclude_ndim_below: int = 2
    exclude_names: Sequence[str] = ()
    layer_decay: float | None = None
    layer_decay_scope: Sequence[str] = ("model.encoders.",)
    embedding_pattern: str = r"embed|token|cls|patch|norm_pre|bn0"
    head_lr_scale: float = 1.0
    head_prefixes: Sequence[str] = ("model.head.",)
    block_pattern: str = BLOCK_PATTERN

    @classmethod
    def from_config(cls, settings: Mapping[str, Any] | "ParameterGroupSettings") -> "ParameterGroupSettings":
        if isinstance(settings, ParameterGroupSettings):
            return settings
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"model.optimizer_groups: unknown keys {unknown}; valid: {sorted(known)}")
        values = dict(settings)
        for key in ("exclude_names", "layer_decay_scope", "head_prefixes"):
            if key in values:
                values[key] = tuple(values[key] or ())
        if values.get("layer_decay") is not None and not 0 < float(values["layer_decay"]) <= 1:
            raise ValueError(f"model.optimizer_groups.layer_decay must be in (0, 1], got {values['layer_decay']}")
        return cls(**values)


def _stack_depths(names: Iterable[str], settings: ParameterGroupSettings) -> dict[str, int]:
    """``{stack prefix: number of blocks}`` of the block stacks inside ``layer_decay_scope``."""
    depths: dict[str, int] = {}
    for name in names:
        match = re.match(settings.block_pattern, name)
        if match and any(name.startswith(scope) for scope in settings.layer_decay_scope):
            stack = match.group("stack")
            depths[stack] = max(depths.get(stack, 0), int(match.group("index")) + 1)
    return depths


def group_of(name: str, ndim: int, settings: ParameterGroupSettings,
             depths: Mapping[str, int] | None = None) -> tuple[bool, float]:
    """``(weight decay applies, LR scale)`` of the parameter ``name`` with ``ndim`` dimensions."""
    decay = ndim >= settings.exclude_ndim_below and not any(re.search(p, name) for p in settings.exclude_names)
    scale = 1.0
    if any(name.startswith(prefix) for prefix in settings.head_prefixes):
        scale *= settings.head_lr_scale
    elif settings.layer_decay is not None and depths:
        for stack, depth in depths.items():
            if not name.startswith(stack + "."):
                continue
            match = re.match(settings.block_pattern, name)
            if match and match.group("stack") == stack:
                layer = int(match.group("index")) + 1                    # blocks: 1..depth
            elif re.search(settings.embedding_pattern, name[len(stack) + 1:]):
                layer = 0                                                # embeddings: below block 1
            else:
                layer = depth + 1                                        # final norm, projection
            scale *= float(settings.layer_decay) ** (depth + 1 - layer)
            break
    return decay, scale


def parameter_groups(module: nn.Module, settings: Mapping[str, Any] | ParameterGroupSettings) -> list[dict[str, Any]]:
    """The trainable parameters of ``module`` as optimizer groups (see the module docstring).

    Returns groups ``{"params", "param_names", "name", "lr_scale"[, "weight_decay": 0.0]}`` in a
    deterministic order (first appearance); every trainable parameter is in exactly one group.
    """
    settings = ParameterGroupSettings.from_config(settings)
    named = [(name, param) for name, param in module.named_parameters() if param.requires_grad]
    depths = _stack_depths((name for name, _ in named), settings) if settings.layer_decay is not None else {}
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    for name, param in named:
        decay, scale = group_of(name, param.ndim, settings, depths)
        key = (decay, round(scale, 12))
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "lr_scale": scale,
                           "name": f"{'decay' if decay else 'no_decay'}_lr_x{scale:.4g}"}
            if not decay:
                groups[key]["weight_decay"] = 0.0
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def apply_lr_scales(optimizer: Optimizer) -> Optimizer:
    """Multiply each group's ``lr`` by its ``lr_scale`` (once, before any scheduler reads ``lr``)."""
    for group in optimizer.param_groups:
        scale = float(group.get("lr_scale", 1.0))
        if scale != 1.0:
            group["lr"] = group["lr"] * scale
    return optimizer

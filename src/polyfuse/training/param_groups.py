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
  stack of blocks under one of ``layer_decay_scope``, block ``i`` (0-based) trains at
  ``layer_decay ** (depth - i)`` times the LR, the stack's stem / embeddings at
  ``layer_decay ** (depth + 1)`` and its other parameters (final norm, projection) at 1. A stack is
  an encoder that declares its blocks (``blocks_for_freezing()``: ViT and BERT ``blocks``,
  MobileNetV2's ``features[1:]`` after its stem ``features.0``, the audio CNN's blocks), or else a
  numbered module list found by name (``block_pattern``: ``blocks`` / ``layers`` / ``resblocks`` /
  ``layer`` / ``features``, torchvision ResNet's ``layer1``..``layer4`` with ``conv1`` / ``bn1`` as
  its stem, as timm's ResNet ``group_matcher``), see :func:`layer_ids`;
* **head LR multiplier** (ViLT fine-tunes its VQA / NLVR2 classifier at 10x): parameters under
  ``head_prefixes`` train at ``head_lr_scale`` times the LR.

Groups carry ``lr_scale`` and ``weight_decay`` (``0.0`` when excluded; otherwise the optimizer's
default stays); :func:`apply_lr_scales` multiplies each group's LR by its ``lr_scale`` once the
optimizer is built, so the base LR stays where the config puts it (``model.optimizer.lr``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from torch import nn
from torch.optim import Optimizer

__all__ = ["ParameterGroupSettings", "parameter_groups", "apply_lr_scales", "group_of", "layer_ids"]

# <stack>.blocks.<i>. (timm, polyfuse), .layers.<i>. / .resblocks.<i>. (open_clip), .layer.<i>. (HF BERT),
# .features.<i>. (torchvision MobileNet / EfficientNet), .layer<i>. (torchvision ResNet stages)
BLOCK_PATTERN = r"^(?P<stack>.+?)\.(?:(?:blocks|layers|resblocks|layer|features)\.|layer(?=\d))(?P<index>\d+)\."


@dataclass(frozen=True)
class ParameterGroupSettings:
    """The ``model.optimizer_groups`` config keys (see the module docstring)."""

    exclude_ndim_below: int = 2
    exclude_names: Sequence[str] = ()
    layer_decay: float | None = None
    layer_decay_scope: Sequence[str] = ("model.encoders.",)
    embedding_pattern: str = r"embed|token|cls|patch|norm_pre|bn0|^conv1\.|^bn1\."
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


def _encoder_layer_ids(prefix: str, encoder: nn.Module, settings: ParameterGroupSettings) -> dict[str, tuple[int, int]]:
    """``{parameter name: (layer id, depth)}`` of an encoder that declares its blocks.

    The blocks are the encoder's :meth:`~polyfuse.encoders.base.Encoder.blocks_for_freezing` (ViT / BERT /
    CLIP-text ``blocks``, MobileNetV2's ``features[1:]``, the audio CNN's ``blocks``), in input-to-output
    order: block ``i`` is layer ``i + 1``. Its stem (``stem_modules()``) and the learned vectors held by
    the encoder itself whose names match ``embedding_pattern`` (class token, position table) are layer
    0, everything else (final norm, projection) layer ``depth + 1``.
    """
    blocks = list(encoder.blocks_for_freezing())
    depth = len(blocks)
    layer_of_param: dict[int, int] = {}
    for module in encoder.stem_modules():
        layer_of_param.update({id(p): 0 for p in module.parameters()})
    for index, block in enumerate(blocks):
        layer_of_param.update({id(p): index + 1 for p in block.parameters()})
    layers = {}
    for name, param in encoder.named_parameters(prefix=prefix):
        layer = layer_of_param.get(id(param))
        if layer is None:
            layer = 0 if re.search(settings.embedding_pattern, name[len(prefix) + 1:]) else depth + 1
        layers[name] = (layer, depth)
    return layers


def _pattern_layer_ids(names: Sequence[str], settings: ParameterGroupSettings) -> dict[str, tuple[int, int]]:
    """``{parameter name: (layer id, depth)}`` of the stacks found by name (``block_pattern``).

    For modules that do not declare their blocks (a torchvision ResNet's ``layer1``..``layer4``, a raw
    ``nn.Module`` with ``blocks.<i>``, ``features.<i>``, a Hugging Face ``encoder.layer.<i>``): block
    ``<i>`` is layer ``i + 1``, the stack's other parameters layer 0 when their name matches
    ``embedding_pattern`` and ``depth + 1`` otherwise.
    """
    depths: dict[str, int] = {}
    for name in names:
        match = re.match(settings.block_pattern, name)
        if match:
            stack = match.group("stack")
            depths[stack] = max(depths.get(stack, 0), int(match.group("index")) + 1)
    layers = {}
    for name in names:
        match = re.match(settings.block_pattern, name)
        for stack, depth in depths.items():
            if not name.startswith(stack + "."):
                continue
            if match and match.group("stack") == stack:
                layers[name] = (int(match.group("index")) + 1, depth)
            elif re.search(settings.embedding_pattern, name[len(stack) + 1:]):
                layers[name] = (0, depth)
            else:
                layers[name] = (depth + 1, depth)
            break
    return layers


def layer_ids(module: nn.Module, settings: Mapping[str, Any] | ParameterGroupSettings) -> dict[str, tuple[int, int]]:
    """``{parameter name: (layer id, depth of its stack)}`` of every parameter in ``layer_decay_scope``
    that belongs to a block stack; layer-wise LR decay scales it by ``layer_decay ** (depth + 1 - id)``.

    A submodule with a non-empty ``blocks_for_freezing()`` (every polyfuse encoder with blocks) is one
    stack, numbered by its own block list; the remaining parameters in scope are matched by name
    (``block_pattern``). Parameters outside every stack are absent (LR scale 1).
    """
    settings = ParameterGroupSettings.from_config(settings)
    in_scope = lambda name: any((name + ".").startswith(scope) for scope in settings.layer_decay_scope)  # noqa: E731
    layers: dict[str, tuple[int, int]] = {}
    covered: set[str] = set()
    for prefix, sub in module.named_modules():
        if any(prefix.startswith(done + ".") for done in covered) or not in_scope(prefix):
            continue
        declares = getattr(sub, "blocks_for_freezing", None)
        if callable(declares) and callable(getattr(sub, "stem_modules", None)) and declares():
            layers.update(_encoder_layer_ids(prefix, sub, settings))
            covered.add(prefix)
    rest = [name for name, _ in module.named_parameters() if name not in layers and in_scope(name)]
    layers.update(_pattern_layer_ids(rest, settings))
    return layers


def group_of(name: str, ndim: int, settings: ParameterGroupSettings,
             layers: Mapping[str, tuple[int, int]] | None = None) -> tuple[bool, float]:
    """``(weight decay applies, LR scale)`` of the parameter ``name`` with ``ndim`` dimensions;
    ``layers`` is :func:`layer_ids` of the module (needed for layer-wise LR decay)."""
    decay = ndim >= settings.exclude_ndim_below and not any(re.search(p, name) for p in settings.exclude_names)
    scale = 1.0
    if any(name.startswith(prefix) for prefix in settings.head_prefixes):
        scale *= settings.head_lr_scale
    elif settings.layer_decay is not None and layers and name in layers:
        layer, depth = layers[name]
        scale *= float(settings.layer_decay) ** (depth + 1 - layer)
    return decay, scale


def parameter_groups(module: nn.Module, settings: Mapping[str, Any] | ParameterGroupSettings) -> list[dict[str, Any]]:
    """The trainable parameters of ``module`` as optimizer groups (see the module docstring).

    Returns groups ``{"params", "param_names", "name", "lr_scale"[, "weight_decay": 0.0]}`` in a
    deterministic order (first appearance); every trainable parameter is in exactly one group.
    """
    settings = ParameterGroupSettings.from_config(settings)
    named = [(name, param) for name, param in module.named_parameters() if param.requires_grad]
    layers = layer_ids(module, settings) if settings.layer_decay is not None else {}
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    for name, param in named:
        decay, scale = group_of(name, param.ndim, settings, layers)
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
